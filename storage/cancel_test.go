package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestDecideAndRecordCancelled: a caller whose context is done before its
// write begins gets ErrCancelled and leaves no action, no record and no
// debit, while writes sharing its group-commit batch are committed; a
// write that began is committed whatever its caller's context does later.
func TestDecideAndRecordCancelled(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			c := ctx
			if i%2 == 1 {
				c = cancelled
			}
			a := &Action{ID: fmt.Sprintf("act_%02d", i), Agent: "demo-agent", Tool: "refund_order", Args: []byte(`{}`),
				Status: StatusExecuting, CustomerID: "cus_ada", AmountMinor: 100, Currency: "USD"}
			errs[i] = db.DecideAndRecord(c, a, &Record{Agent: "demo-agent", Tool: "refund_order", Args: []byte(`{}`)}, func(Usage) {
				a.Decision = "allow"
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		_, aerr := db.Action(ctx, fmt.Sprintf("act_%02d", i))
		if i%2 == 1 {
			if !errors.Is(err, ErrCancelled) || aerr == nil {
				t.Fatalf("cancelled write %d: err %v, action lookup %v; want ErrCancelled and no action", i, err, aerr)
			}
			continue
		}
		if err != nil || aerr != nil {
			t.Fatalf("write %d: %v, %v; want it recorded", i, err, aerr)
		}
	}
	if recs := readAll(t, db, Filter{}); len(recs) != n/2 {
		t.Fatalf("%d records, want %d: the cancelled writes recorded nothing", len(recs), n/2)
	}

	// Begun, then cancelled: decide runs inside the write, so cancelling
	// there is a cancel after the commit point.
	live, cancelLive := context.WithCancel(ctx)
	a := &Action{ID: "act_late", Agent: "demo-agent", Tool: "refund_order", Args: []byte(`{}`), Status: StatusExecuting}
	err := db.DecideAndRecord(live, a, &Record{Agent: "demo-agent", Tool: "refund_order"}, func(Usage) { cancelLive() })
	if err != nil {
		t.Fatalf("a write cancelled after it began: %v, want it recorded", err)
	}
	if _, err := db.Action(ctx, "act_late"); err != nil {
		t.Fatal(err)
	}
}
