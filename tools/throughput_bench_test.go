package tools_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// BenchmarkFsyncPerAction is the baseline: one durable SQLite commit
// (synchronous=FULL, WAL) per action, one after another, on the same disk as
// the other benchmarks. 1e9/ns_per_op is what one fsync per action allows.
func BenchmarkFsyncPerAction(b *testing.B) {
	db, err := sql.Open("sqlite", storage.DSN(filepath.Join(b.TempDir(), "baseline.db")))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)`); err != nil {
		b.Fatal(err)
	}
	body := string(make([]byte, 300))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := db.Exec(`INSERT INTO t (body) VALUES (?)`, body); err != nil {
			b.Fatal(err)
		}
	}
}

// remote is a system of record reached over the network: its latency is
// not this disk's, and it keeps what it did in memory for the benchmark.
type remote struct {
	mu     sync.Mutex
	orders map[string]backend.Order
}

func (r *remote) Order(_ context.Context, id string) (backend.Order, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.orders[id]
	if !ok {
		return o, mandate.Errorf(mandate.ENOTFOUND, "no order %q", id)
	}
	return o, nil
}
func (r *remote) Customer(context.Context, string) (backend.Customer, error) {
	return backend.Customer{ID: "cus_b", CreatedAt: time.Now().AddDate(-1, 0, 0)}, nil
}
func (r *remote) Refund(_ context.Context, req backend.RefundRequest) (backend.Refund, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.orders[req.OrderID]
	o.Refunded.Minor += req.Amount.Minor
	r.orders[req.OrderID] = o
	return backend.Refund{ID: "re_" + req.IdempotencyKey, OrderID: req.OrderID, Amount: req.Amount}, nil
}
func (r *remote) RefundByKey(context.Context, string) (backend.Refund, error) {
	return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "none")
}

// BenchmarkGuardedActions16 runs whole guarded refunds (decide, durable
// attempt, backend call, durable outcome) from 16 concurrent callers, with
// group commit, against a remote-like backend. Compare 1e9/ns_per_op with
// BenchmarkFsyncPerAction from the same run.
func BenchmarkGuardedActions16(b *testing.B) {
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(b.TempDir(), "mandate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: []byte(`
p, bench_role, refund_order, amount <= 50.00, allow
g, bench-agent, bench_role
`)})
	if err != nil {
		b.Fatal(err)
	}
	r := &remote{orders: map[string]backend.Order{}}
	for i := range 64 {
		r.orders[fmt.Sprintf("ord_b%d", i)] = backend.Order{ID: fmt.Sprintf("ord_b%d", i), CustomerID: "cus_b", Status: "delivered",
			Total: mandate.Money{Minor: 1 << 40, Currency: "USD"}, Refunded: mandate.Money{Currency: "USD"}}
	}
	recordLive(b, db, pol)
	d := &tools.Deps{Agent: "bench-agent", Policy: policy.NewEngine(pol), DB: db, Logger: slog.New(slog.DiscardHandler),
		Backend: backend.Backend{Payments: r, Orders: r, Customers: fakeCustomers{r}}}
	refund := handler(b, d, "refund_order")
	var n atomic.Int64
	b.SetParallelism(8) // 8 × GOMAXPROCS(2) = 16 callers on the 2-core machine
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			res, err := refund(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
				Arguments: map[string]any{"order_id": fmt.Sprintf("ord_b%d", i%64), "amount": "1.00", "reason": "bench"}}})
			if err != nil || res.IsError {
				b.Errorf("refund failed: %v %+v", err, res)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "actions/s")
}

type fakeCustomers struct{ r *remote }

func (f fakeCustomers) Customer(ctx context.Context, id string) (backend.Customer, error) {
	return f.r.Customer(ctx, id)
}
func (f fakeCustomers) CustomerByEmail(ctx context.Context, _ string) (backend.Customer, error) {
	return f.r.Customer(ctx, "")
}
func (f fakeCustomers) UpdateCustomer(ctx context.Context, _ backend.UpdateRequest) (backend.Customer, error) {
	return f.r.Customer(ctx, "")
}
func (f fakeCustomers) UpdateByKey(context.Context, string) (backend.Customer, error) {
	return backend.Customer{}, mandate.Errorf(mandate.ENOTFOUND, "none")
}

func (r *remote) CancelOrder(context.Context, backend.CancelRequest) (backend.Order, error) {
	return backend.Order{}, mandate.Errorf(mandate.ECONFLICT, "not in this benchmark")
}
func (r *remote) CancellationByKey(context.Context, string) (backend.Order, error) {
	return backend.Order{}, mandate.Errorf(mandate.ENOTFOUND, "none")
}
