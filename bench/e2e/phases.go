package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// result is one measured phase.
type result struct {
	n, failed int
	median    time.Duration
	p99       time.Duration
	perSec    float64
	firstErr  string
	// cpu is the CPU time (user and system) the servers' processes used
	// during the phase, 0 where the OS does not say (cpuTime).
	cpu time.Duration
}

// cpuPerCall is the servers' CPU time per successful call: unlike
// latency, it does not move with what else the machine is doing, and on
// two cores shared with the client it is what bounds calls/s.
func (r result) cpuPerCall() time.Duration {
	if r.n == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.n)
}

// call makes one tool call on s and reports whether it succeeded.
type call func(ctx context.Context, s *server, i int) error

// measure runs callers goroutines over servers (round robin) for the
// configured duration, each making calls back to back.
func (b *bench) measure(ctx context.Context, servers []*server, callers int, fn call) result {
	var (
		mu       sync.Mutex
		lat      []time.Duration
		failed   int
		firstErr string
		seq      atomic.Int64
		wg       sync.WaitGroup
	)
	cpu0 := serversCPU(servers)
	start := time.Now()
	deadline := start.Add(b.cfg.duration)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := servers[c%len(servers)]
			var mine []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				err := fn(ctx, s, int(seq.Add(1)))
				d := time.Since(t0)
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := result{n: len(lat), failed: failed, firstErr: firstErr, perSec: float64(len(lat)) / elapsed.Seconds()}
	if cpu0 > 0 {
		r.cpu = serversCPU(servers) - cpu0
	}
	if len(lat) > 0 {
		r.median = lat[len(lat)/2]
		r.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r
}

// refund returns a call that refunds 1.00 on the next unused order of the
// server's side, with an idempotency key when keyed, and remembers the
// action id of every refund that succeeded.
func (b *bench) refund(keyed func(i int) bool) call {
	return func(ctx context.Context, s *server, i int) error {
		next := &b.mandateNext
		switch s.side {
		case "bare":
			next = &b.bareNext
		case "floor":
			next = &b.floorNext
		}
		o := int(next.Add(1)) - 1
		if o >= b.cfg.orders {
			return fmt.Errorf("ran out of orders (raise -orders)")
		}
		args := map[string]any{"order_id": orderID(o), "amount": "1.00", "reason": "Benchmark refund."}
		if keyed != nil && keyed(i) {
			args["idempotency_key"] = fmt.Sprintf("bench-%s-%d", s.side, o)
		}
		res, err := s.session.CallTool(ctx, &sdk.CallToolParams{Name: "refund_order", Arguments: args})
		if err != nil {
			return err
		}
		f := fields(res)
		if res.IsError || f["status"] != "executed" {
			return fmt.Errorf("refund of %s: %v", orderID(o), text(res))
		}
		id, _ := f["action_id"].(string)
		b.mu.Lock()
		b.refunds[s.side][id] = true
		b.mu.Unlock()
		return nil
	}
}

// tool returns a call of a read-only tool that must not fail.
func tool(name string, args func(i int) map[string]any) call {
	return func(ctx context.Context, s *server, i int) error {
		res, err := s.session.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args(i)})
		if err != nil {
			return err
		}
		if res.IsError {
			return fmt.Errorf("%s: %s", name, text(res))
		}
		return nil
	}
}

func fields(res *sdk.CallToolResult) map[string]any {
	b, _ := json.Marshal(res.StructuredContent)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func text(res *sdk.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, " ")
}

// runAll runs every phase, prints the table and checks the stores and the
// audit trail.
func (b *bench) runAll(ctx context.Context) error {
	if b.cfg.only == "http" {
		return b.runHTTPOnly(ctx)
	}
	if b.cfg.only == "replicas" {
		return b.runReplicas(ctx)
	}
	if b.cfg.only == "processes" {
		return b.runProcessesOnly(ctx)
	}
	if b.cfg.only == "sequential" {
		return b.runSequentialOnly(ctx)
	}
	m, err := b.start(ctx, "mandate")
	if err != nil {
		return err
	}
	bare, err := b.start(ctx, "bare")
	if err != nil {
		return err
	}
	floor, err := b.start(ctx, "floor")
	if err != nil {
		return err
	}
	servers := []*server{m, bare, floor}
	stopAll := func() error {
		var errs []string
		for _, s := range servers {
			if err := s.session.Close(); err != nil {
				errs = append(errs, fmt.Sprintf("%s did not exit cleanly: %v\n%s", s.side, err, s.stderr))
			}
		}
		servers = nil
		if len(errs) > 0 {
			return fmt.Errorf("%s", strings.Join(errs, "\n"))
		}
		return nil
	}
	defer func() {
		if servers != nil {
			stopAll()
		}
	}()

	getOrder := tool("get_order", func(i int) map[string]any { return map[string]any{"order_id": orderID(i % b.cfg.orders)} })
	noop := tool("noop", func(int) map[string]any { return map[string]any{} })
	// Warm both up (first calls load code paths, caches, prepared statements).
	b.say("warming up")
	old := b.cfg.duration
	b.cfg.duration = 300 * time.Millisecond
	for _, s := range []*server{m, bare} {
		b.measure(ctx, []*server{s}, 4, b.refund(nil))
		b.measure(ctx, []*server{s}, 1, getOrder)
	}
	b.measure(ctx, []*server{floor}, 1, b.refund(nil))
	b.cfg.duration = old

	t := &table{}
	for _, c := range []int{1, 4, 16} {
		b.say("refunds, %d concurrent callers", c)
		rm := b.measure(ctx, []*server{m}, c, b.refund(nil))
		rb := b.measure(ctx, []*server{bare}, c, b.refund(nil))
		t.latency(fmt.Sprintf("refund, %d callers: median", c), rm.median, rb.median,
			when(c == 1, mark(float64(rm.median) <= 1.5*float64(rb.median), "≤ 1.5×")))
		t.latency(fmt.Sprintf("refund, %d callers: p99", c), rm.p99, rb.p99,
			when(c == 16, mark(rm.p99 <= 5*rm.median, "Mandate's p99 ≤ 5× its median")))
		t.rate(fmt.Sprintf("refund, %d callers: calls/s", c), rm.perSec, rb.perSec,
			when(c == 16, mark(rm.perSec >= 0.8*rb.perSec, "≥ 0.8×")))
		t.cpu(fmt.Sprintf("refund, %d callers: server CPU per call", c), rm, rb)
		t.fail(rm, rb)
		if c == 1 {
			rf := b.measure(ctx, []*server{floor}, 1, b.refund(nil))
			t.floor(rf, rb)
		}
		if c == 4 {
			t.oneProc4 = rm.perSec
		}
	}
	b.say("get_order and no-op, sequential")
	gm := b.measure(ctx, []*server{m}, 1, getOrder)
	gb := b.measure(ctx, []*server{bare}, 1, getOrder)
	nb := b.measure(ctx, []*server{bare}, 1, noop)
	t.latency("get_order, sequential: median", gm.median, gb.median, mark(float64(gm.median) <= 1.3*float64(gb.median), "≤ 1.3×"))
	t.cpu("get_order, sequential: server CPU per call", gm, gb)
	t.latency("no-op tool (bare mcp-go), sequential: median", 0, nb.median, "")
	t.fail(gm, gb, nb)

	b.say("4 mandate serve processes on one database, one caller each")
	procs := []*server{m}
	for range 3 {
		s, err := b.start(ctx, "mandate")
		if err != nil {
			return err
		}
		servers = append(servers, s)
		procs = append(procs, s)
	}
	b.measure(ctx, procs, 4, b.refund(nil)) // warm the new processes
	r4 := b.measure(ctx, procs, 4, b.refund(nil))
	t.rows = append(t.rows, row{"refunds/s: 4 processes × 1 caller vs 1 process × 4 callers",
		fmt.Sprintf("%.0f", r4.perSec), fmt.Sprintf("%.0f (1 process)", t.oneProc4), ratio(r4.perSec, t.oneProc4),
		mark(r4.perSec >= 0.8*t.oneProc4, "≥ 0.8×")})
	t.fail(r4)

	for _, n := range b.cfg.prefill {
		n, err := b.prefillTo(ctx, n)
		if err != nil {
			return fmt.Errorf("recording history: %w", err)
		}
		b.say("keyed and unkeyed refunds after %d recorded actions", n)
		// Alternate call by call, so drift in the machine hits both alike.
		var keyedLat, plainLat []time.Duration
		var mu sync.Mutex
		keyed := func(i int) bool { return i%2 == 0 }
		inner := b.refund(keyed)
		r := b.measure(ctx, []*server{m}, 1, func(ctx context.Context, s *server, i int) error {
			t0 := time.Now()
			err := inner(ctx, s, i)
			mu.Lock()
			if err == nil && keyed(i) {
				keyedLat = append(keyedLat, time.Since(t0))
			} else if err == nil {
				plainLat = append(plainLat, time.Since(t0))
			}
			mu.Unlock()
			return err
		})
		t.fail(r)
		km, pm := median(keyedLat), median(plainLat)
		t.rows = append(t.rows, row{fmt.Sprintf("refund median after %d actions: with idempotency key vs without", n),
			ms(km), ms(pm) + " (mandate, no key)", ratio(float64(km), float64(pm)), mark(float64(km) <= 1.1*float64(pm), "≤ 1.1×")})
	}

	ht, err := b.runHTTP(ctx, m, t)
	if err != nil {
		return err
	}
	if err := stopAll(); err != nil {
		return err
	}
	t.print(os.Stdout, b)
	ht.print(os.Stdout, b)
	return b.verdict(ctx, t)
}

func median(l []time.Duration) time.Duration {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	return l[len(l)/2]
}

// verdict checks each store and Mandate's trail against the refunds the
// client saw succeed (check), and that no measured call failed.
func (b *bench) verdict(ctx context.Context, t *table) error {
	b.say("checking the stores and the audit trail against what the client saw")
	if err := b.check(ctx); err != nil {
		return err
	}
	if t.failures > 0 {
		return fmt.Errorf("%d calls failed (first: %s)", t.failures, t.firstErr)
	}
	fmt.Println("\nCheck passed: each store and the audit trail hold exactly the refunds the client saw succeed; the hash chain verifies.")
	return nil
}
