package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
)

// TestApprovalsShowFlagsRewrittenRow: `approvals show` reads the actions
// row, which nothing chains. When a database writer rewrote an executed
// refund as "denied by bob", it says so first, naming each field and what
// the audit records say.
func TestApprovalsShowFlagsRewrittenRow(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	a := &storage.Action{ID: "act_show1", Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{"amount":"5.00","order_id":"ord_1001","reason":"late"}`),
		Decision: "allow", Rule: "test", Status: storage.StatusExecuting, ExpiresAt: time.Now().Add(time.Hour)}
	if err := db.RecordAttempt(ctx, a, &storage.Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: a.Decision}); err != nil {
		t.Fatal(err)
	}
	a.Status = storage.StatusExecuted
	if err := db.RecordOutcome(ctx, a, &storage.Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: a.Decision, Outcome: storage.StatusExecuted}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	if out := mandateOK(t, "approvals", "show", a.ID, "--db", path); strings.Contains(out, "WARNING") || !strings.Contains(out, "executed") {
		t.Fatalf("show before the rewrite:\n%s", out)
	}
	raw := tamperDB(t, path)
	if _, err := raw.Exec(`UPDATE actions SET status = 'denied', approver = 'bob' WHERE id = ?`, a.ID); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	out := mandateOK(t, "approvals", "show", a.ID, "--db", path)
	if !strings.HasPrefix(out, "WARNING: this action's row DISAGREES with its audit records") ||
		!strings.Contains(out, `status: table "denied", trail "executed"`) || !strings.Contains(out, `approver: table "bob", trail ""`) {
		t.Fatalf("show after the rewrite:\n%s", out)
	}
}
