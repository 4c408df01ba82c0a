package main

import (
	"context"
	"fmt"
	"strings"
)

// runProcessesOnly is `-only processes`: the multi-process comparison
// alone, for quick iteration on what several `mandate serve` processes on
// one database cost. One process with four callers, then four processes
// with one caller each, then the one process again with four callers (the
// other three idle but running, as in the full run), all on the same files,
// so drift in a shared machine and the growing history hit both sides; the
// one-process figure is the mean of its two runs. Then the same checks of
// the store and the audit trail as a full run.
func (b *bench) runProcessesOnly(ctx context.Context) error {
	m, err := b.start(ctx, "mandate")
	if err != nil {
		return err
	}
	procs := []*server{m}
	stopAll := func() error {
		var errs []string
		for _, s := range procs {
			if err := s.session.Close(); err != nil {
				errs = append(errs, fmt.Sprintf("%s did not exit cleanly: %v\n%s", s.side, err, s.stderr))
			}
		}
		procs = nil
		if len(errs) > 0 {
			return fmt.Errorf("%s", strings.Join(errs, "\n"))
		}
		return nil
	}
	defer func() {
		if procs != nil {
			stopAll()
		}
	}()
	t := &table{}
	b.say("warming up one process")
	b.measure(ctx, procs, 4, b.refund(nil))
	b.say("1 process × 4 callers")
	r1 := b.measure(ctx, procs, 4, b.refund(nil))
	for range 3 {
		s, err := b.start(ctx, "mandate")
		if err != nil {
			return err
		}
		procs = append(procs, s)
	}
	b.measure(ctx, procs, 4, b.refund(nil)) // warm the new processes
	b.say("4 processes × 1 caller")
	r4 := b.measure(ctx, procs, 4, b.refund(nil))
	b.say("1 process × 4 callers, again")
	r1b := b.measure(ctx, procs[:1], 4, b.refund(nil))
	t.fail(r1, r4, r1b)
	one := (r1.perSec + r1b.perSec) / 2
	if err := stopAll(); err != nil {
		return err
	}
	fmt.Printf("\nGuarded refunds on one database; %s per run, official Go SDK client over stdio.\n\n", b.cfg.duration)
	fmt.Println("| run | calls/s | median | p99 |")
	fmt.Println("|---|---|---|---|")
	for _, r := range []struct {
		what string
		res  result
	}{{"1 process × 4 callers", r1}, {"4 processes × 1 caller", r4}, {"1 process × 4 callers, again", r1b}} {
		fmt.Printf("| %s | %.0f | %s | %s |\n", r.what, r.res.perSec, ms(r.res.median), ms(r.res.p99))
	}
	fmt.Printf("\n4 processes ÷ 1 process (mean of its two runs): %s, %s\n", ratio(r4.perSec, one), mark(r4.perSec >= 0.8*one, "≥ 0.8×"))
	b.say("checking the store and the audit trail against what the clients saw")
	if err := b.check(ctx); err != nil {
		return err
	}
	if t.failures > 0 {
		return fmt.Errorf("%d calls failed (first: %s)", t.failures, t.firstErr)
	}
	fmt.Println("\nCheck passed: the store and the audit trail hold exactly the refunds the clients saw succeed; the hash chain verifies.")
	return nil
}
