package tools_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestRecoverResumesApprovedAction: a person approved a refund, and the
// server stopped before claiming it, so the backend was never called.
// Recovery on a server sharing the database carries it out, once.
func TestRecoverResumesApprovedAction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, _, err := store.OpenSeeded(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "serve start", Identity: "demo-agent"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base, Command: "serve start", Identity: "demo-agent"}); err != nil {
		t.Fatal(err)
	}
	d := &tools.Deps{Agent: "demo-agent", Policy: policy.NewEngine(pol), DB: db, Logger: slog.New(slog.DiscardHandler),
		Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}
	refund := handler(t, d, "refund_order")
	res, err := refund(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}}})
	if err != nil {
		t.Fatal(err)
	}
	pending := res.StructuredContent.(*tools.ActionResult)
	if pending.Decision != policy.RequireApproval {
		t.Fatalf("decision %s, want require_approval", pending.Decision)
	}
	// The approval is recorded; the server dies before ClaimApproved.
	if _, err := db.Decide(ctx, pending.ActionID, storage.Review{Approver: "alice"}, func(*storage.Action, storage.Usage) (storage.Review, error) {
		return storage.Review{Approver: "alice", Approve: true, Decision: policy.Allow, Rule: "test approval"}, nil
	}); err != nil {
		t.Fatal(err)
	}

	// Too recent: a live server may be about to claim it.
	if rep, err := tools.Recover(ctx, d, time.Minute); err != nil || rep.Resumed != 0 {
		t.Fatalf("Recover = %+v, %v; want nothing resumed within the grace period", rep, err)
	}
	d.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	rep, err := tools.Recover(ctx, d, time.Minute)
	if err != nil || rep.Resumed != 1 {
		t.Fatalf("Recover = %+v, %v; want one approved action resumed", rep, err)
	}
	act, err := db.Action(ctx, pending.ActionID)
	if err != nil {
		t.Fatal(err)
	}
	if act.Status != storage.StatusExecuted {
		t.Fatalf("status %s, want executed", act.Status)
	}
	o, err := st.Order(ctx, "ord_1002")
	if err != nil {
		t.Fatal(err)
	}
	if o.Refunded.Minor != 15000 {
		t.Fatalf("refunded %s, want 150.00", o.Refunded)
	}
	// Once only.
	if rep, err := tools.Recover(ctx, d, time.Minute); err != nil || rep.Resumed != 0 {
		t.Fatalf("second Recover = %+v, %v; want nothing", rep, err)
	}
	if o, _ := st.Order(ctx, "ord_1002"); o.Refunded.Minor != 15000 {
		t.Fatalf("refunded %s after a second recovery, want 150.00", o.Refunded)
	}
}

// finderPayments is a payment system that can search one order's refunds
// (backend.RefundFinder), as Stripe can, noting each search.
type finderPayments struct {
	*fakeBackend
	mu       sync.Mutex
	searched []string // "key order"
}

func (f *finderPayments) RefundByKeyOnOrder(ctx context.Context, key, orderID string) (backend.Refund, error) {
	f.mu.Lock()
	f.searched = append(f.searched, key+" "+orderID)
	f.mu.Unlock()
	return backend.Refund{ID: "re_" + key, OrderID: orderID, Amount: mandate.Money{Minor: 1000, Currency: "USD"}, IdempotencyKey: key, CreatedAt: now}, nil
}

// TestRecoverSearchesTheOrdersRefunds: an executing refund is reconciled by
// searching its own order's refunds when the payment system can (Stripe's
// key-only search covers only recent refunds of the whole account), and
// the refund found there is recorded as done.
func TestRecoverSearchesTheOrdersRefunds(t *testing.T) {
	be := &fakeBackend{OnRefund: func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
		return backend.Refund{}, mandate.Errorf(mandate.EUNAVAILABLE, "the payment system did not answer")
	}}
	h := newHarness(t, policyFrom(t, allowAllBut("")), be)
	ctx := tools.WithAgent(context.Background(), "tester")
	o := decode(t, h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "recover test"}))
	if o.Status != storage.StatusExecuting {
		t.Fatalf("refund with no answer: %+v, want it left executing", o)
	}
	fp := &finderPayments{fakeBackend: be}
	h.deps.Backend.Payments = fp
	be.mu.Lock()
	before := len(be.calls)
	be.mu.Unlock()
	h.deps.Now = func() time.Time { return time.Now().Add(time.Hour) } // past the grace
	rep, err := tools.Recover(context.Background(), h.deps, time.Minute)
	if err != nil || rep.Executed != 1 {
		t.Fatalf("Recover = %+v, %v; want the refund reconciled as executed", rep, err)
	}
	if len(fp.searched) != 1 || fp.searched[0] != o.ActionID+" ord_1001" {
		t.Fatalf("searched %v, want the action's key on ord_1001", fp.searched)
	}
	if slices.Contains(be.calls[before:], "RefundByKey") {
		t.Fatalf("the key-only search was used too: %v", be.calls[before:])
	}
}
