package tools

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// raw calls tool as agent through the real guard and returns the result.
func (e *approvalEnv) raw(t *testing.T, agent, tool string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	res, err := e.tools[tool].Handler(WithAgent(context.Background(), agent), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// TestSuspendStopsAgent: a suspension refuses the agent's actions and
// lookups at once (actions-only keeps lookups), tells it the suspension
// but not the reason, audits every refusal, leaves its idempotency keys
// free for after the resumption, and touches no other agent.
func TestSuspendStopsAgent(t *testing.T) {
	ctx := context.Background()
	for _, actionsOnly := range []bool{false, true} {
		e := newApprovalEnv(t, mandate.DefaultPolicy)
		refund := map[string]any{"order_id": "ord_1001", "amount": "1.00", "reason": "late", "idempotency_key": "k1"}
		lookup := map[string]any{"order_id": "ord_1001"}
		if _, err := Suspend(ctx, e.d, "alice", "demo-agent", "secret: suspected injection via cus_ada's note", actionsOnly); err != nil {
			t.Fatal(err)
		}
		res := e.raw(t, "demo-agent", "refund_order", refund)
		msg := resultText(res)
		if !res.IsError || !strings.Contains(msg, "suspended") || !strings.Contains(msg, "suspension") || strings.Contains(msg, "secret") {
			t.Fatalf("actions-only %v: refund while suspended: %s; want a refusal naming the suspension and not its reason", actionsOnly, msg)
		}
		if got := e.refunded(t, "ord_1001"); got != "0.00" {
			t.Fatalf("refunded %s while suspended", got)
		}
		res = e.raw(t, "demo-agent", "get_order", lookup)
		if res.IsError == actionsOnly {
			t.Fatalf("actions-only %v: lookup while suspended: error %v: %s", actionsOnly, res.IsError, resultText(res))
		}
		if other := e.raw(t, "senior-bot", "get_order", lookup); other.IsError {
			t.Fatalf("another agent was refused: %s", resultText(other))
		}
		refusals := auditOf(t, e.d.DB, storage.Filter{Agent: "demo-agent", Decision: policy.Deny})
		want := 2
		if actionsOnly {
			want = 1
		}
		if len(refusals) != want {
			t.Fatalf("actions-only %v: %d refusals audited, want %d", actionsOnly, len(refusals), want)
		}
		for _, r := range refusals {
			if !strings.Contains(r.Rule, "suspension") || r.Outcome != "refused" {
				t.Fatalf("refusal record: rule %q outcome %q", r.Rule, r.Outcome)
			}
		}
		if _, err := Resume(ctx, e.d, "bob", "demo-agent"); err != nil {
			t.Fatal(err)
		}
		var ar ActionResult
		e.call(t, "demo-agent", "refund_order", refund, &ar)
		if ar.Decision != policy.Allow || ar.Status != storage.StatusExecuted {
			t.Fatalf("after resume, with the same key: %+v, want it done", ar)
		}
		if _, err := e.d.DB.Verify(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSuspendIsPolicy: only who the live policy lets suspend may, and a
// refusal is audited; a name that is no agent is refused.
func TestSuspendIsPolicy(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	if _, err := Suspend(ctx, e.d, "senior-bot", "demo-agent", "rival", false); mandate.ErrorCode(err) != mandate.EDENIED {
		t.Fatalf("an agent suspending: err = %v, want denied", err)
	}
	recs := auditOf(t, e.d.DB, storage.Filter{Tool: SuspendTool})
	if len(recs) != 1 || recs[0].Agent != "senior-bot" || recs[0].Decision != policy.Deny || recs[0].Outcome != "refused" {
		t.Fatalf("records = %+v, want senior-bot's refusal", recs)
	}
	var args map[string]any
	if json.Unmarshal(recs[0].Args, &args) != nil || args["agent"] != "demo-agent" || args["reason"] != "rival" {
		t.Fatalf("refusal args = %s", recs[0].Args)
	}
	if _, err := Suspend(ctx, e.d, "alice", "alice", "x", false); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("suspending a person: err = %v, want invalid", err)
	}
	if s, _ := e.d.DB.ActiveSuspension(ctx, "demo-agent"); s != nil {
		t.Fatalf("suspended by a refused request: %+v", s)
	}
	// Under a policy that is not the live one, even a supervisor is refused.
	stale := *e.d
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "other.csv", Data: append([]byte("# other\n"), mandate.DefaultPolicy...)})
	if err != nil {
		t.Fatal(err)
	}
	stale.Policy = policy.NewEngine(pol)
	if _, err := Suspend(ctx, &stale, "alice", "demo-agent", "x", false); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("under a stale policy: err = %v, want conflict", err)
	}
}

// TestSuspendHoldsApprovals: a suspended agent's pending action cannot be
// approved (it stays pending, the refusal is audited), can be denied, and
// can be approved once the agent is resumed.
func TestSuspendHoldsApprovals(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	held := e.pendingRefund(t, "demo-agent", "ord_1002", "150.00")
	other := e.pendingRefund(t, "demo-agent", "ord_1002", "60.00")
	if _, err := Suspend(ctx, e.d, "alice", "demo-agent", "checking", true); err != nil {
		t.Fatal(err)
	}
	_, err := Approve(ctx, e.d, held, "bob", "fine")
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(mandate.ErrorMessage(err), "suspended") {
		t.Fatalf("approve while suspended: err = %v, want a conflict saying it is suspended", err)
	}
	if st := e.status(t, "demo-agent", held); st.Status != storage.StatusPending {
		t.Fatalf("held action is %s, want pending", st.Status)
	}
	trail := e.approvalRecords(t, held)
	if last := trail[len(trail)-1]; last != "approval/refused/bob" {
		t.Fatalf("trail %v: want the held approval audited", trail)
	}
	if _, err := Deny(ctx, e.d, other, "bob", "not while suspended"); err != nil {
		t.Fatalf("deny while suspended: %v", err)
	}
	if _, err := Resume(ctx, e.d, "alice", "demo-agent"); err != nil {
		t.Fatal(err)
	}
	act, err := Approve(ctx, e.d, held, "bob", "fine now")
	if err != nil || act.Status != storage.StatusExecuting && act.Status != storage.StatusExecuted {
		t.Fatalf("approve after resume: %+v, %v", act, err)
	}
	if got := e.refunded(t, "ord_1002"); got != "150.00" {
		t.Fatalf("refunded %s after approval, want 150.00", got)
	}
}

func auditOf(t *testing.T, db *storage.DB, f storage.Filter) []storage.Record {
	t.Helper()
	var out []storage.Record
	if err := db.Records(context.Background(), f, func(r *storage.Record) error { out = append(out, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// BenchmarkLookupSuspended is what the kill switch adds to every lookup:
// the check against this process's cached view of the active suspensions,
// read again from the database every SuspensionRefresh.
func BenchmarkLookupSuspended(b *testing.B) {
	ctx := context.Background()
	db, err := storage.Open(ctx, b.TempDir()+"/m.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	d := withDefaults(&Deps{DB: db})
	for b.Loop() {
		if lookupSuspended(ctx, d, "demo-agent") != 0 {
			b.Fatal("suspended")
		}
	}
}

// TestSuspendRefusesReplay: under a suspension of lookups, a retry with the
// key of an action done before the suspension is refused and audited like
// any call, not answered with the earlier result (which get_action_status,
// a lookup, would refuse); under actions-only, the retry is answered from
// the record, as the lookup would be. Neither acts again.
func TestSuspendRefusesReplay(t *testing.T) {
	ctx := context.Background()
	for _, actionsOnly := range []bool{false, true} {
		e := newApprovalEnv(t, mandate.DefaultPolicy)
		refund := map[string]any{"order_id": "ord_1001", "amount": "1.00", "reason": "late", "idempotency_key": "k-before"}
		var first ActionResult
		e.call(t, "demo-agent", "refund_order", refund, &first)
		if first.Status != storage.StatusExecuted {
			t.Fatalf("refund before the suspension: %+v", first)
		}
		if _, err := Suspend(ctx, e.d, "alice", "demo-agent", "x", actionsOnly); err != nil {
			t.Fatal(err)
		}
		res := e.raw(t, "demo-agent", "refund_order", refund)
		msg := resultText(res)
		if actionsOnly {
			if res.IsError || !strings.Contains(msg, first.ActionID) {
				t.Fatalf("actions-only: retry = %s; want the earlier result", msg)
			}
		} else if !res.IsError || !strings.Contains(msg, "suspended") || strings.Contains(msg, first.ActionID) {
			t.Fatalf("retry while suspended = %s; want a refusal for the suspension, without the earlier action", msg)
		}
		if got := e.refunded(t, "ord_1001"); got != "1.00" {
			t.Fatalf("actions-only %v: refunded %s, want 1.00 (once)", actionsOnly, got)
		}
		want := 1
		if actionsOnly {
			want = 0
		}
		if n := len(auditOf(t, e.d.DB, storage.Filter{Agent: "demo-agent", Decision: policy.Deny})); n != want {
			t.Fatalf("actions-only %v: %d refusals audited, want %d", actionsOnly, n, want)
		}
	}
}
