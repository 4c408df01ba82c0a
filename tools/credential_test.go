package tools

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestCredentialInAudit: every record the guard writes for a call names
// the call's credential (attempt and outcome, reads too); a person's
// approval, and the outcome of the action it releases, name none, even
// when the approver's own context carries a credential.
func TestCredentialInAudit(t *testing.T) {
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	call := func(ctx context.Context, tool string, args map[string]any) ActionResult {
		t.Helper()
		res, err := e.tools[tool].Handler(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args}})
		if err != nil {
			t.Fatal(err)
		}
		var out ActionResult
		b, _ := json.Marshal(res.StructuredContent)
		_ = json.Unmarshal(b, &out)
		return out
	}
	creds := func(id string) []string {
		t.Helper()
		var out []string
		if err := e.d.DB.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
			out = append(out, r.Phase+"/"+r.Credential)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	agent := WithCredential(WithAgent(context.Background(), "demo-agent"), "jwt:tok-1")
	ok := call(agent, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "5.00", "reason": "late delivery"})
	if ok.Status != storage.StatusExecuted {
		t.Fatalf("small refund: %+v", ok)
	}
	if got := creds(ok.ActionID); len(got) != 2 || got[0] != "attempt/jwt:tok-1" || got[1] != "outcome/jwt:tok-1" {
		t.Fatalf("allowed refund records %v, want attempt and outcome with jwt:tok-1", got)
	}
	pending := call(agent, "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late delivery"})
	if pending.Status != storage.StatusPending {
		t.Fatalf("medium refund: %+v", pending)
	}
	approver := WithCredential(WithAgent(context.Background(), "alice"), "key:approverkey")
	if act, err := Approve(approver, e.d, pending.ActionID, "alice", "fine"); err != nil || act.Status != storage.StatusExecuted {
		t.Fatalf("Approve: %+v %v", act, err)
	}
	if got := creds(pending.ActionID); len(got) != 3 || got[0] != "attempt/jwt:tok-1" || got[1] != "approval/" || got[2] != "outcome/" {
		t.Fatalf("approved refund records %v, want the agent's credential on the attempt only", got)
	}
	// A read is one record, with the credential.
	var n int
	_ = call(agent, "get_order", map[string]any{"order_id": "ord_1001"})
	if err := e.d.DB.Records(context.Background(), storage.Filter{Tool: "get_order"}, func(r *storage.Record) error {
		if r.Credential != "jwt:tok-1" {
			t.Fatalf("read record credential %q", r.Credential)
		}
		n++
		return nil
	}); err != nil || n != 1 {
		t.Fatalf("%d get_order records, %v", n, err)
	}
}
