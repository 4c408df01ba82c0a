package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mandatehq/mandate/internal/pgtest"
	"github.com/mandatehq/mandate/storage"
)

// The replicas phase (`-only replicas`, issue 12): guarded refunds/s from 1,
// 2 and 3 `mandate serve` processes sharing one PostgreSQL database, beside
// the same 1, 2 and 3 processes sharing one SQLite file, in one run so the
// ratios compare. Each (engine, N) run gets a fresh Mandate database (a new
// database in a throwaway cluster on 127.0.0.1, or a new file) and a fresh
// copy of one imported store, so no run inherits another's history; the
// engines alternate at each N so drift in a shared machine hits both alike.
// The system of record is the embedded store in both columns: one SQLite
// file shared by the N processes, as in the replica tests, so only the
// engine holding Mandate's own state (audit chain, actions, limits) differs.

// replicaCounts are the numbers of processes compared.
var replicaCounts = []int{1, 2, 3}

// replicaEngines are the engines compared, in the order each N runs them.
var replicaEngines = []string{"sqlite", "postgres"}

// replicaRun is one (engine, N) measurement.
type replicaRun struct {
	engine string
	procs  int
	res    result
}

// runReplicas is `-only replicas`: it starts PostgreSQL, runs every
// (engine, N), checks each run's audit trail and store against what the
// clients saw, prints the table and stops the cluster.
func (b *bench) runReplicas(ctx context.Context) error {
	// Ctrl-C cancels the measurement instead of killing the process, so the
	// deferred clean-up still stops the cluster and removes its files.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	b.say("starting a throwaway PostgreSQL cluster on 127.0.0.1")
	cl, err := pgtest.Start()
	if err != nil {
		return fmt.Errorf("PostgreSQL (the replicas phase needs its server binaries, e.g. apt-get install postgresql): %w", err)
	}
	defer cl.Close()

	// One imported store, copied for every run: importing once keeps the
	// runs' starting points identical and the phase short.
	template := filepath.Join(b.dir, "replicas-store.db")
	data := filepath.Join(b.dir, "data.json")
	if out, err := exec.Command(b.mandateBin, "store", "import", "--store", template, data).CombinedOutput(); err != nil {
		return fmt.Errorf("mandate store import: %v\n%s", err, out)
	}

	var runs []replicaRun
	var problems []string
	for _, n := range replicaCounts {
		for _, engine := range replicaEngines {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, bad, err := b.replicaRun(ctx, cl, template, engine, n)
			if err != nil && ctx.Err() != nil {
				return fmt.Errorf("interrupted during %s, %d processes; the cluster is stopped and its files removed", engine, n)
			}
			if err != nil {
				return fmt.Errorf("%s, %d processes: %w", engine, n, err)
			}
			runs = append(runs, r)
			problems = append(problems, bad...)
		}
	}
	printReplicas(os.Stdout, b, runs)
	failures, firstErr := 0, ""
	for _, r := range runs {
		failures += r.res.failed
		if firstErr == "" && r.res.firstErr != "" {
			firstErr = fmt.Sprintf("%s × %d: %s", r.engine, r.procs, r.res.firstErr)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("what was kept differs from what the clients saw:\n  %s", strings.Join(problems, "\n  "))
	}
	if failures > 0 {
		return fmt.Errorf("%d calls failed (first: %s)", failures, firstErr)
	}
	fmt.Println("\nCheck passed: after every run, the store and the audit trail hold exactly the refunds the clients saw succeed; each hash chain verifies.")
	return nil
}

// replicaRun starts n `mandate serve` processes on a fresh database of
// engine and a fresh copy of the store, warms them up, measures refunds from
// the fixed number of callers spread over them (round robin), stops them,
// and checks what was kept. It returns the measurement and the problems the
// check found.
func (b *bench) replicaRun(ctx context.Context, cl *pgtest.Cluster, template, engine string, n int) (replicaRun, []string, error) {
	run := replicaRun{engine: engine, procs: n}
	name := fmt.Sprintf("replicas_%s_%d", engine, n)
	store := filepath.Join(b.dir, name+"-store.db")
	if err := copyFile(template, store); err != nil {
		return run, nil, err
	}
	db := filepath.Join(b.dir, name+".db")
	if engine == "postgres" {
		var err error
		if db, err = cl.CreateDatabase(name); err != nil {
			return run, nil, err
		}
	}
	// Migrate before the processes start, so the first measured calls do
	// not include it (serve migrates under a lock, so it would be safe).
	if s, err := storage.Open(ctx, db); err != nil {
		return run, nil, err
	} else if err := s.Close(); err != nil {
		return run, nil, err
	}
	side := fmt.Sprintf("%s×%d", engine, n)
	b.mu.Lock()
	b.refunds[side] = map[string]bool{}
	b.mu.Unlock()
	b.mandateNext.Store(0) // each run refunds the orders of its own store copy

	var procs []*server
	stopAll := func() []string {
		var errs []string
		for _, s := range procs {
			if err := s.session.Close(); err != nil {
				errs = append(errs, fmt.Sprintf("%s: a mandate serve process did not exit cleanly: %v\n%s", side, err, s.stderr))
			}
		}
		procs = nil
		return errs
	}
	defer stopAll()
	b.say("%s: %d mandate serve processes, %d callers", engine, n, b.cfg.replicaCallers)
	for range n {
		s, err := b.startOn(ctx, side, db, store)
		if err != nil {
			return run, nil, err
		}
		procs = append(procs, s)
	}
	measured := b.cfg.duration
	b.cfg.duration = 300 * time.Millisecond
	warm := b.measure(ctx, procs, b.cfg.replicaCallers, b.refund(nil))
	b.cfg.duration = measured
	run.res = b.measure(ctx, procs, b.cfg.replicaCallers, b.refund(nil))
	run.res.failed += warm.failed
	if run.res.firstErr == "" {
		run.res.firstErr = warm.firstErr
	}
	problems := stopAll()
	b.mu.Lock()
	seen := b.refunds[side]
	b.mu.Unlock()
	bad, err := checkTrail(ctx, db, store, seen)
	if err != nil {
		return run, nil, err
	}
	for _, p := range bad {
		problems = append(problems, side+": "+p)
	}
	return run, problems, nil
}

// copyFile copies a closed SQLite file (and its WAL, if one was left).
func copyFile(from, to string) error {
	for _, suffix := range []string{"", "-wal"} {
		in, err := os.Open(from + suffix)
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			return err
		}
		out, err := os.Create(to + suffix)
		if err != nil {
			in.Close()
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// printReplicas prints one row per N: each engine's calls/s, median and
// p99, PostgreSQL ÷ SQLite, and each engine's N ÷ 1 processes.
func printReplicas(w io.Writer, b *bench, runs []replicaRun) {
	get := func(engine string, n int) result {
		for _, r := range runs {
			if r.engine == engine && r.procs == n {
				return r.res
			}
		}
		return result{}
	}
	fmt.Fprintf(w, "\nGuarded refunds from %d concurrent callers spread over N `mandate serve` processes (stdio, official Go SDK client) sharing one Mandate database: PostgreSQL (one database, a throwaway cluster on 127.0.0.1) vs SQLite (one file); the store is one SQLite file in both; %s per run.\n\n", b.cfg.replicaCallers, b.cfg.duration)
	fmt.Fprintln(w, "| processes | SQLite calls/s | SQLite median | SQLite p99 | PostgreSQL calls/s | PostgreSQL median | PostgreSQL p99 | PostgreSQL ÷ SQLite (calls/s) | SQLite N ÷ 1 | PostgreSQL N ÷ 1 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	s1, p1 := get("sqlite", 1), get("postgres", 1)
	for _, n := range replicaCounts {
		s, p := get("sqlite", n), get("postgres", n)
		fmt.Fprintf(w, "| %d | %.0f | %s | %s | %.0f | %s | %s | %s | %s | %s |\n", n,
			s.perSec, ms(s.median), ms(s.p99), p.perSec, ms(p.median), ms(p.p99),
			ratio(p.perSec, s.perSec), ratio(s.perSec, s1.perSec), ratio(p.perSec, p1.perSec))
	}
}
