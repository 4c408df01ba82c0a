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
// with an invisible character, puts back a demo phone number written with
// spaces exactly as the system of record held it (agents must send E.164,
// a revert restores), and --apply by one person leaves nothing for
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
	const gracePhone = "+1 202 555 0143" // the demo data's, not E.164
	if c, _ := e.st.Customer(ctx, "cus_grace"); c.Phone != gracePhone {
		t.Fatalf("cus_grace's phone is %q in the demo data, want %q", c.Phone, gracePhone)
	}
	if _, err := e.st.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_alan", Field: "name", Value: "Alan\u200bTuring", IdempotencyKey: "hidden"}); err != nil {
		t.Fatal(err)
	}
	first := change("cus_ada", "email", "x1@attacker.example")
	second := change("cus_ada", "email", "x2@attacker.example")
	outside := change("cus_marie", "email", "x3@attacker.example")
	legacy := change("cus_grace", "phone", "+15550000001")
	hidden := change("cus_alan", "name", "Mallory")
	if _, err := e.st.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_marie", Field: "email", Value: "marie@elsewhere.example", IdempotencyKey: "outside"}); err != nil {
		t.Fatal(err)
	}

	since := time.Now().Add(-time.Hour)
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Revert) != 2 || plan.Revert[0].ActionID != second || plan.Revert[0].To != "ada@example.com" ||
		len(plan.Revert[0].Covers) != 1 || plan.Revert[0].Covers[0] != first ||
		plan.Revert[1].ActionID != legacy || plan.Revert[1].To != gracePhone {
		t.Fatalf("revert = %+v; want %s back to ada@example.com, covering %s, and %s back to %q", plan.Revert, second, first, legacy, gracePhone)
	}
	why := map[string]string{}
	for _, it := range plan.Skipped {
		why[it.ActionID] = it.Why
	}
	for id, want := range map[string]string{first: "undone by the revert of " + second, outside: "changed outside Mandate", hidden: "invisible character"} {
		if !strings.Contains(why[id], want) {
			t.Fatalf("skipped %s because %q, want %q (all: %v)", id, why[id], want, why)
		}
	}
	if len(plan.Skipped) != 3 {
		t.Fatalf("skipped %v, want only %s, %s and %s", why, first, outside, hidden)
	}
	if p, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "cus_grace"); len(p.Revert) != 1 || len(p.Skipped) != 0 {
		t.Fatalf("--customer cus_grace: %+v", p)
	}

	stale, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "") // bob's, made before alice applies
	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if len(res) != 2 || res[0].Status != "reverted" || res[1].Status != "reverted" {
		t.Fatalf("apply: %+v", res)
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Email != "ada@example.com" {
		t.Fatalf("cus_ada email = %q after the revert", c.Email)
	}
	if c, _ := e.st.Customer(ctx, "cus_grace"); c.Phone != gracePhone {
		t.Fatalf("cus_grace phone = %q after the revert, want %q exactly", c.Phone, gracePhone)
	}
	res = ApplyRemediation(ctx, e.d, "bob", stale)
	for _, r := range res {
		if r.Status != "skipped" || !strings.Contains(r.Message, "alice") {
			t.Fatalf("bob applying a stale plan: %+v; want each revert skipped, naming alice", res)
		}
	}
	if len(res) != 2 {
		t.Fatalf("bob applying a stale plan: %+v; want 2 results", res)
	}
	again, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	if len(again.Revert) != 0 {
		t.Fatalf("after the revert the plan still reverts %+v", again.Revert)
	}
	for _, it := range again.Skipped {
		if (it.ActionID == second || it.ActionID == legacy) && !strings.Contains(it.Why, "already reverted by") {
			t.Fatalf("%s skipped because %q, want already reverted", it.ActionID, it.Why)
		}
	}
	// Each revert is alice's update_account, decided by
	// revert_update_account and linked to what it reverts.
	recs := auditOf(t, e.d.DB, storage.Filter{Agent: "alice", Tool: "update_account"})
	if len(recs) != 4 {
		t.Fatalf("alice's records: %+v, want an attempt and an outcome per revert", recs)
	}
	for _, id := range []string{second, legacy} {
		found := false
		for _, r := range recs {
			if r.Phase == storage.PhaseAttempt && strings.Contains(r.Rule, "revert_update_account") && strings.Contains(string(r.Attrs), `"reverts":"`+id+`"`) {
				found = true
			}
		}
		if !found {
			t.Fatalf("no attempt of alice's decided by revert_update_account reverts %s: %+v", id, recs)
		}
	}
}

// TestRevertRestoresOnlyItsValue: the leniency of a revert covers the one
// value it puts back; any other value in a revert's arguments is checked
// as an agent's would be, and no agent's call is a revert.
func TestRevertRestoresOnlyItsValue(t *testing.T) {
	a := updateArgs{CustomerID: "cus_grace", Field: "phone", Value: "+1 202 555 0143", Reason: "r"}
	if err := a.validateRevert("+1 202 555 0143"); err != nil {
		t.Fatalf("a revert to the recorded value: %v", err)
	}
	if err := a.validateRevert("+12025550143"); err == nil || !strings.Contains(mandate.ErrorMessage(err), "E.164") {
		t.Fatalf("a revert to another value than recorded: %v, want the E.164 rule", err)
	}
	if err := a.validate(); err == nil {
		t.Fatal("an agent's phone with spaces was accepted")
	}
	hidden := updateArgs{CustomerID: "cus_alan", Field: "name", Value: "Alan\u200bTuring", Reason: "r"}
	if err := hidden.validateRevert(hidden.Value); err == nil {
		t.Fatal("a revert to a value with an invisible character was accepted")
	}
	var b updateArgs
	raw := []byte(`{"customer_id":"cus_grace","field":"phone","value":"+1 202 555 0143","reason":"r"}`)
	if err := bindCall(context.Background(), raw, &b, []string{"customer_id", "field", "value", "reason"}); err == nil {
		t.Fatal("bindCall outside a revert accepted a phone with spaces")
	}
	if err := bindCall(withRevert(context.Background(), "act_1", "+1 202 555 0143"), raw, &b, []string{"customer_id", "field", "value", "reason"}); err != nil {
		t.Fatalf("bindCall in a revert: %v", err)
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
