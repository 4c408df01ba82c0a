package tools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// benchEnv is a whole deployment in files: the gateway database and the
// embedded store, both synchronous=FULL (every commit durable), the shipped
// policy, and the registered refund_order handler.
type benchEnv struct {
	st      *store.Store
	db      *storage.DB
	refund  server.ServerTool
	lookup  server.ServerTool // get_order
	ctx     context.Context
	next    atomic.Int64 // the next iteration
	perUser int
	keyed   bool // each refund carries its own idempotency_key
}

// benchRefund is what each iteration refunds. The shipped policy's limits
// over time shape the setup: a customer may get 3 refunds in 30 days before
// a person must approve (so each customer gets at most 3), and senior-bot
// may refund 5000.00 a day (so the gateway's clock moves 20 s per reading,
// about 40 s per refund, and no 24 h window ever holds enough refunds to
// reach it). Every refund is allowed and really made.
const benchRefund = "1.00"

func newBenchEnv(b *testing.B, n int) *benchEnv {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()

	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	var ticks atomic.Int64
	start := time.Now()
	db.Now = func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * 20 * time.Second) }

	st, err := store.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	e := &benchEnv{st: st, db: db, ctx: tools.WithAgent(ctx, "senior-bot"), perUser: 3}
	if _, err := st.Import(ctx, benchShop(n/e.perUser+1)); err != nil {
		b.Fatalf("import: %v", err)
	}

	pol := shippedPolicy(b)
	recordLive(b, db, pol)
	deps := &tools.Deps{
		Policy:  policy.NewEngine(pol),
		DB:      db,
		Backend: backend.Backend{Payments: st, Orders: st, Customers: st},
	}
	for _, t := range tools.ServerTools(deps) {
		switch t.Tool.Name {
		case "refund_order":
			e.refund = t
		case "get_order":
			e.lookup = t
		}
	}
	if e.refund.Handler == nil {
		b.Fatal("refund_order is not registered")
	}
	return e
}

// benchShop is an import file of n long-standing customers, each with one
// delivered order of a million dollars, so refunds never run out.
func benchShop(n int) []byte {
	var f store.ImportFile
	for i := range n {
		id := fmt.Sprintf("%06d", i)
		f.Customers = append(f.Customers, store.CustomerRecord{ID: "cus_b" + id, Name: "Bench Customer " + id,
			Email: "bench" + id + "@example.com", CreatedAt: "2020-01-01T00:00:00Z"})
		f.Orders = append(f.Orders, store.OrderRecord{ID: "ord_b" + id, CustomerID: "cus_b" + id, Status: backend.StatusDelivered,
			Currency: "USD", Total: "1000000.00", Refunded: "0.00", CreatedAt: "2020-02-01T00:00:00Z"})
	}
	b, _ := json.Marshal(f)
	return b
}

// refundOnce runs the i-th guarded refund; it is an error unless the refund
// was allowed and made.
func (e *benchEnv) refundOnce(i int64) error {
	args := map[string]any{
		"order_id": fmt.Sprintf("ord_b%06d", i/int64(e.perUser)), "amount": benchRefund, "reason": "Benchmark goodwill",
	}
	if e.keyed {
		args["idempotency_key"] = fmt.Sprintf("bench-%d", i)
	}
	req := mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order", Arguments: args}}
	res, err := e.refund.Handler(e.ctx, req)
	if err != nil {
		return fmt.Errorf("refund %d: %v", i, err)
	}
	if ar, ok := res.StructuredContent.(*tools.ActionResult); res.IsError || !ok || ar.Status != storage.StatusExecuted {
		return fmt.Errorf("refund %d not executed: %s", i, text(res))
	}
	return nil
}

// checkRefunded fails unless the store holds exactly n refunds of 1.00.
func (e *benchEnv) checkRefunded(b *testing.B, n int) {
	b.Helper()
	var total int64
	for i := 0; i <= n/e.perUser; i++ {
		o, err := e.st.Order(context.Background(), fmt.Sprintf("ord_b%06d", i))
		if err != nil {
			b.Fatal(err)
		}
		total += o.Refunded.Minor
	}
	if total != int64(n)*100 {
		b.Fatalf("store refunded %d cents over %d refunds, want %d", total, n, n*100)
	}
}

// reportPercentiles adds the median and 99th percentile to ns/op (a mean).
func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkGuardedRefund is one whole guarded refund, as an agent's
// tools/call runs it in-process: bind, read the order and customer, count
// limits, decide with the shipped policy, commit the attempt durably, refund
// in the store, commit the outcome durably. Target: p50 ≤ 1 ms on 2 cores.
func BenchmarkGuardedRefund(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(map[bool]string{false: "unkeyed", true: "keyed"}[keyed], func(b *testing.B) {
			benchRefunds(b, keyed)
		})
	}
}

func benchRefunds(b *testing.B, keyed bool) {
	e := newBenchEnv(b, b.N)
	e.keyed = keyed
	took := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := e.refundOnce(int64(i)); err != nil {
			b.Fatal(err)
		}
		took[i] = time.Since(t0)
	}
	b.StopTimer()
	if b.Failed() {
		return
	}
	reportPercentiles(b, took)
	e.checkRefunded(b, b.N)
}

// BenchmarkGuardedRefundParallel is the same with calls in flight at once,
// as stdio's worker pool and several agents' processes produce them:
// SQLite serializes the commits, so this shows what contention costs.
func BenchmarkGuardedRefundParallel(b *testing.B) {
	e := newBenchEnv(b, b.N)
	var mu sync.Mutex
	var took []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if err := e.refundOnce(e.next.Add(1) - 1); err != nil {
				b.Error(err) // not Fatal: this is not the benchmark's goroutine
				break
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		took = append(took, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if b.Failed() {
		return
	}
	reportPercentiles(b, took)
	e.checkRefunded(b, b.N)
}

// BenchmarkGuardedLookup is one whole guarded get_order in-process: bind,
// decide, record the lookup, read the order, answer. Its record is either
// queued and waited for while the order is read (wait-for-commit: one-off
// commands, PostgreSQL) or written to the lookup journal first (journal:
// mandate serve on SQLite). Compare BenchmarkOrder in backend/store, the
// read alone.
func BenchmarkGuardedLookup(b *testing.B) {
	for _, journal := range []bool{false, true} {
		b.Run(map[bool]string{false: "wait-for-commit", true: "journal"}[journal], func(b *testing.B) {
			benchLookup(b, journal)
		})
	}
}

func benchLookup(b *testing.B, journal bool) {
	e := newBenchEnv(b, 3)
	if journal {
		if err := e.db.OpenLookupJournal(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	req := mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get_order", Arguments: map[string]any{"order_id": "ord_b000000"}}}
	took := make([]time.Duration, 0, b.N)
	for b.Loop() {
		t0 := time.Now()
		res, err := e.lookup.Handler(e.ctx, req)
		if err != nil || res.IsError {
			b.Fatalf("get_order: %v %s", err, text(res))
		}
		took = append(took, time.Since(t0))
	}
	reportPercentiles(b, took)
}
