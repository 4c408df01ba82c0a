package tools_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
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
