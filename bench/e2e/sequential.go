package main

import (
	"context"
	"fmt"
	"os"
)

// runSequentialOnly compares one caller's refunds and get_order calls on
// one `mandate serve`, the bare server and the floor (the bare server
// with one durable intent commit per refund), alternating them rounds times so that drift in the machine hits both alike: the quickest
// way to see the sequential ratios move, and (with MANDATE_CPUPROFILE set)
// a profile of a serve process that did nothing else.
func (b *bench) runSequentialOnly(ctx context.Context) error {
	m, err := b.start(ctx, "mandate")
	if err != nil {
		return err
	}
	bare, err := b.start(ctx, "bare")
	if err != nil {
		m.session.Close()
		return err
	}
	floor, err := b.start(ctx, "floor")
	if err != nil {
		m.session.Close()
		bare.session.Close()
		return err
	}
	getOrder := tool("get_order", func(i int) map[string]any { return map[string]any{"order_id": orderID(i % b.cfg.orders)} })
	b.say("warming up")
	for _, s := range []*server{m, bare} {
		b.measure(ctx, []*server{s}, 1, b.refund(nil))
		b.measure(ctx, []*server{s}, 1, getOrder)
	}
	b.measure(ctx, []*server{floor}, 1, b.refund(nil))
	t := &table{}
	const rounds = 3
	var rm, rb, rf, gm, gb []result
	for i := range rounds {
		b.say("round %d of %d: refunds and get_order, one caller", i+1, rounds)
		rm = append(rm, b.measure(ctx, []*server{m}, 1, b.refund(nil)))
		rb = append(rb, b.measure(ctx, []*server{bare}, 1, b.refund(nil)))
		rf = append(rf, b.measure(ctx, []*server{floor}, 1, b.refund(nil)))
		gm = append(gm, b.measure(ctx, []*server{m}, 1, getOrder))
		gb = append(gb, b.measure(ctx, []*server{bare}, 1, getOrder))
	}
	for i := range rounds {
		t.latency(fmt.Sprintf("refund, 1 caller, round %d: median", i+1), rm[i].median, rb[i].median,
			mark(float64(rm[i].median) <= 1.5*float64(rb[i].median), "≤ 1.5×"))
		t.cpu(fmt.Sprintf("refund, 1 caller, round %d: server CPU per call", i+1), rm[i], rb[i])
		t.fail(rm[i], rb[i], rf[i])
		t.floor(rf[i], rb[i])
	}
	for i := range rounds {
		t.latency(fmt.Sprintf("get_order, round %d: median", i+1), gm[i].median, gb[i].median,
			mark(float64(gm[i].median) <= 1.3*float64(gb[i].median), "≤ 1.3×"))
		t.cpu(fmt.Sprintf("get_order, round %d: server CPU per call", i+1), gm[i], gb[i])
		t.fail(gm[i], gb[i])
	}
	for _, s := range []*server{m, bare, floor} {
		if err := s.session.Close(); err != nil {
			return fmt.Errorf("%s did not exit cleanly: %v\n%s", s.side, err, s.stderr)
		}
	}
	t.print(os.Stdout, b)
	return b.verdict(ctx, t)
}
