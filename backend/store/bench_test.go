package store

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// benchStore opens a store in a real file holding one customer and one order
// large enough for any b.N of one-cent refunds: the calls measured are the
// ones a guarded refund makes (Order, Customer, Refund).
func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "mandate.db"))
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	data, err := json.Marshal(ImportFile{
		Customers: []CustomerRecord{{ID: "cus_1", Name: "Ada", Email: "ada@example.com", CreatedAt: "2026-01-01T00:00:00Z"}},
		Orders: []OrderRecord{{ID: "ord_1", CustomerID: "cus_1", Status: backend.StatusDelivered, Currency: "USD",
			Total: "100000000.00", CreatedAt: "2026-01-02T00:00:00Z"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Import(context.Background(), data); err != nil {
		b.Fatalf("Import: %v", err)
	}
	return s
}

func BenchmarkOrder(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Order(ctx, "ord_1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCustomer(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Customer(ctx, "cus_1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefund makes one new one-cent refund per iteration. Its time is
// mostly the commit's fsync (synchronous=FULL); the allocations and the CPU
// profile show the statements' own cost.
func BenchmarkRefund(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	s.Now = func() time.Time { return time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC) }
	cent := mandate.Money{Minor: 1, Currency: "USD"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := s.Refund(ctx, backend.RefundRequest{
			OrderID: "ord_1", Amount: cent, Reason: "bench", IdempotencyKey: "k" + strconv.Itoa(i),
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOrderParallel looks the order up from 16 goroutines, as 16
// concurrent callers of get_order would.
func BenchmarkOrderParallel(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	b.ReportAllocs()
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Order(ctx, "ord_1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFactsAfterRefund reads an order and its customer, as a guarded
// refund does before deciding, right after a refund has changed the
// store: the reads are timed, the refund is not. SQLite drops a
// connection's page cache whenever another connection has written, so
// this is what the guard's facts cost on a store that is being written
// (Store.warm).
func BenchmarkFactsAfterRefund(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	cent := mandate.Money{Minor: 1, Currency: "USD"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		if _, err := s.Refund(ctx, backend.RefundRequest{
			OrderID: "ord_1", Amount: cent, Reason: "bench", IdempotencyKey: "k" + strconv.Itoa(i),
		}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		o, err := s.Order(ctx, "ord_1")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Customer(ctx, o.CustomerID); err != nil {
			b.Fatal(err)
		}
	}
}
