package tools

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/storage"
)

// TestRemediationPlan: the plan coalesces an agent's run of changes to one
// field into one revert to the value before the first, skips a field the
// system of record no longer holds as the agent set it and a previous value
// today's rules refuse, and --apply by one person leaves nothing for
// another: a stale plan of theirs is skipped, a fresh one is empty.
func TestRemediationPlan(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	change := func(customer, field, value string) string {
		t.Helper()
		var r ActionResult
		e.call(t, "senior-bot", "update_account", map[string]any{"customer_id": customer, "field": field, "value": value, "reason": "asked"}, &r)
		if r.Status != storage.StatusExecuted {
			t.Fatalf("change of %s on %s: %+v", field, customer, r)
		}
		return r.ActionID
	}
	first := change("cus_ada", "email", "x1@attacker.example")
	second := change("cus_ada", "email", "x2@attacker.example")
	outside := change("cus_marie", "email", "x3@attacker.example")
	legacy := change("cus_grace", "phone", "+15550000001") // was "+1 202 555 0143"
	if _, err := e.st.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_marie", Field: "email", Value: "marie@elsewhere.example", IdempotencyKey: "outside"}); err != nil {
		t.Fatal(err)
	}

	since := time.Now().Add(-time.Hour)
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Revert) != 1 || plan.Revert[0].ActionID != second || plan.Revert[0].To != "ada@example.com" ||
		len(plan.Revert[0].Covers) != 1 || plan.Revert[0].Covers[0] != first {
		t.Fatalf("revert = %+v; want %s back to ada@example.com, covering %s", plan.Revert, second, first)
	}
	why := map[string]string{}
	for _, it := range plan.Skipped {
		why[it.ActionID] = it.Why
	}
	for id, want := range map[string]string{first: "undone by the revert of " + second, outside: "changed outside Mandate", legacy: "not accepted by today's rules"} {
		if !strings.Contains(why[id], want) {
			t.Fatalf("skipped %s because %q, want %q (all: %v)", id, why[id], want, why)
		}
	}
	if p, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "cus_grace"); len(p.Revert)+len(p.Skipped) != 1 {
		t.Fatalf("--customer cus_grace: %+v", p)
	}

	stale, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "") // bob's, made before alice applies
	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if len(res) != 1 || res[0].Status != "reverted" {
		t.Fatalf("apply: %+v", res)
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Email != "ada@example.com" {
		t.Fatalf("cus_ada email = %q after the revert", c.Email)
	}
	if res := ApplyRemediation(ctx, e.d, "bob", stale); len(res) != 1 || res[0].Status != "skipped" || !strings.Contains(res[0].Message, "alice") {
		t.Fatalf("bob applying a stale plan: %+v; want it skipped, naming alice", res)
	}
	again, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	if len(again.Revert) != 0 {
		t.Fatalf("after the revert the plan still reverts %+v", again.Revert)
	}
	for _, it := range again.Skipped {
		if it.ActionID == second && !strings.Contains(it.Why, "already reverted by") {
			t.Fatalf("%s skipped because %q, want already reverted", second, it.Why)
		}
	}
	// The revert is alice's update_account, decided by revert_update_account
	// and linked to what it reverts.
	recs := auditOf(t, e.d.DB, storage.Filter{Agent: "alice", Tool: "update_account"})
	if len(recs) != 2 || !strings.Contains(recs[0].Rule, "revert_update_account") || !strings.Contains(string(recs[0].Attrs), `"reverts":"`+second+`"`) {
		t.Fatalf("alice's records: %+v", recs)
	}
}

// TestRevertIsPolicy: a person the rules do not let revert is refused,
// through the guard, and nothing changes.
func TestRevertIsPolicy(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, []byte(strings.Replace(string(mandate.DefaultPolicy), "p, supervisor, revert_update_account, true, allow", "p, supervisor, revert_update_account, field == 'email', allow", 1)))
	var r ActionResult
	e.call(t, "senior-bot", "update_account", map[string]any{"customer_id": "cus_ada", "field": "name", "value": "Mallory", "reason": "asked"}, &r)
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-time.Hour), "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if len(res) != 1 || res[0].Status != "failed" {
		t.Fatalf("apply of a revert the rules refuse: %+v", res)
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Name != "Mallory" {
		t.Fatalf("name = %q: a refused revert changed it", c.Name)
	}
}
