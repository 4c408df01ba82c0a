package tools

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// changeAs has agent change one field of customer, which must execute.
func changeAs(t *testing.T, e *approvalEnv, agent, customer, field, value string) string {
	t.Helper()
	var r ActionResult
	e.call(t, agent, "update_account", map[string]any{"customer_id": customer, "field": field, "value": value, "reason": "asked"}, &r)
	if r.Status != storage.StatusExecuted {
		t.Fatalf("change of %s on %s: %+v", field, customer, r)
	}
	return r.ActionID
}

// TestRevertApprovedLaterLeavesANewerValue: a revert that waited for a
// person's approval is not sent when the field no longer holds what the
// agent set: the customer's own change in between stays (a review found
// it overwritten).
func TestRevertApprovedLaterLeavesANewerValue(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, []byte(strings.Replace(string(mandate.DefaultPolicy),
		"p, supervisor, revert_update_account, true, allow", "p, supervisor, revert_update_account, true, require_approval", 1)))
	changeAs(t, e, "senior-bot", "cus_ada", "phone", "+15550000001")
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-time.Hour), "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v %v", plan, err)
	}
	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if len(res) != 1 || res[0].Status != "pending" {
		t.Fatalf("apply: %+v", res)
	}
	// Meanwhile the customer sets a new phone number (outside Mandate).
	if _, err := e.st.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: "phone", Value: "+15559999999", IdempotencyKey: "customer-self-service"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Approve(ctx, e.d, res[0].RevertID, "bob", "ok"); err != nil {
		t.Logf("approve: %v", err)
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Phone != "+15559999999" {
		t.Fatalf("cus_ada phone = %q: the approved revert overwrote the customer's own later change (+15559999999)", c.Phone)
	}
}

// TestRevertOfAStalePlanLeavesANewerValue: the same without approval, for
// a plan applied after the value moved on.
func TestRevertOfAStalePlanLeavesANewerValue(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	changeAs(t, e, "senior-bot", "cus_ada", "phone", "+15550000001")
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-time.Hour), "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v %v", plan, err)
	}
	if _, err := e.st.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: "phone", Value: "+15559999999", IdempotencyKey: "customer-self-service"}); err != nil {
		t.Fatal(err)
	}
	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Phone != "+15559999999" {
		t.Fatalf("cus_ada phone = %q (apply: %s %s): the revert overwrote a change made after the plan", c.Phone, res[0].Status, res[0].Message)
	}
}

// TestWiderWindowAfterANarrowOne: a narrow window's revert put back the
// agent's own earlier value; a wider plan reverts that earlier change too,
// back to the customer's value (it used to call it "undone" and leave the
// agent's value).
func TestWiderWindowAfterANarrowOne(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	c1 := changeAs(t, e, "senior-bot", "cus_ada", "email", "x1@attacker.example")
	time.Sleep(50 * time.Millisecond)
	between := time.Now() // say, "--since 2h" when c1 was 3h ago
	time.Sleep(50 * time.Millisecond)
	c2 := changeAs(t, e, "senior-bot", "cus_ada", "email", "x2@attacker.example")
	narrow, err := PlanRemediation(ctx, e.d, "senior-bot", between, "")
	if err != nil || len(narrow.Revert) != 1 || narrow.Revert[0].ActionID != c2 {
		t.Fatalf("narrow plan %+v %v", narrow, err)
	}
	if res := ApplyRemediation(ctx, e.d, "alice", narrow); res[0].Status != "reverted" {
		t.Fatalf("apply: %+v", res)
	}
	wide, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-3*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := e.st.Customer(ctx, "cus_ada")
	if len(wide.Revert) != 1 || wide.Revert[0].ActionID != c1 || wide.Revert[0].To != "ada@example.com" {
		t.Fatalf("the wider plan, with the email still the agent's %q: revert %+v; want %s back to ada@example.com", cur.Email, wide.Revert, c1)
	}
	if res := ApplyRemediation(ctx, e.d, "alice", wide); res[0].Status != "reverted" {
		t.Fatalf("apply the wider plan: %+v", res)
	}
	if cur, _ := e.st.Customer(ctx, "cus_ada"); cur.Email != "ada@example.com" {
		t.Fatalf("email after the wider plan: %q", cur.Email)
	}
	again, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-3*time.Hour), "")
	if err != nil || len(again.Revert) != 0 {
		t.Fatalf("a third plan: %+v %v; want nothing left to revert", again, err)
	}
	for _, it := range again.Skipped {
		if it.ActionID == c1 && !strings.HasPrefix(it.Why, "already reverted by ") {
			t.Fatalf("a third plan skips %s because %q; want already reverted", c1, it.Why)
		}
	}
}

// flakyCustomers fails every read while down is set.
type flakyCustomers struct {
	backend.Customers
	down *atomic.Bool
}

func (f flakyCustomers) Customer(ctx context.Context, id string) (backend.Customer, error) {
	if f.down.Load() {
		return backend.Customer{}, mandate.Errorf(mandate.EUNAVAILABLE, "the system of record is unavailable")
	}
	return f.Customers.Customer(ctx, id)
}

// TestFailedRevertIsTriedAgain: a revert that failed for a passing reason
// (the system of record briefly down) is tried again by the next run,
// whoever makes it: its claim was given back and the new one has a new
// idempotency key.
func TestFailedRevertIsTriedAgain(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	changeAs(t, e, "senior-bot", "cus_ada", "phone", "+15550000001")
	since := time.Now().Add(-time.Hour)
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v %v", plan, err)
	}
	var down atomic.Bool
	d := *e.d
	d.Backend.Customers = flakyCustomers{Customers: e.st, down: &down}
	down.Store(true)
	res := ApplyRemediation(ctx, &d, "alice", plan)
	t.Logf("while down: %s: %s", res[0].Status, res[0].Message)
	down.Store(false)
	// The same person again: tried anew, not answered with the failure.
	plan, err = PlanRemediation(ctx, &d, "senior-bot", since, "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v %v", plan, err)
	}
	res = ApplyRemediation(ctx, &d, "alice", plan)
	if res[0].Status != "reverted" {
		t.Fatalf("alice after recovery: %s: %s", res[0].Status, res[0].Message)
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Phone == "+15550000001" {
		t.Fatalf("phone still the agent's %q: once the backend is back, no run by anyone can revert it", c.Phone)
	}
}

// TestRemediatingAPersonSkipsTheirReverts: remediating the person who ran
// a remediation does not plan to revert their reverts (which would put
// the misbehaving agent's values back); each is skipped, saying so.
func TestRemediatingAPersonSkipsTheirReverts(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	changeAs(t, e, "senior-bot", "cus_ada", "email", "x1@attacker.example")
	since := time.Now().Add(-time.Hour)
	plan, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	if res := ApplyRemediation(ctx, e.d, "alice", plan); res[0].Status != "reverted" {
		t.Fatalf("apply: %+v", res)
	}
	p2, err := PlanRemediation(ctx, e.d, "alice", since, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range p2.Revert {
		t.Logf("to revert: %s %s %s: %q -> %q", it.ActionID, it.CustomerID, it.Field, it.From, it.To)
	}
	if len(p2.Revert) != 0 {
		res := ApplyRemediation(ctx, e.d, "bob", p2)
		c, _ := e.st.Customer(ctx, "cus_ada")
		t.Fatalf("remediate --agent alice plans %d revert(s) of alice's reverts; applied by bob: %s; email now %q (the attacker's)", len(p2.Revert), res[0].Status, c.Email)
	}
}

// TestRefusedRevertLeavesNoClaim: a person the rules do not let revert (an
// auditor) who runs --apply is refused and keeps no claim, so a
// supervisor after them reverts the change.
func TestRefusedRevertLeavesNoClaim(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, []byte(string(mandate.DefaultPolicy)+"\ng, carol, auditor\n"))
	changeAs(t, e, "senior-bot", "cus_ada", "email", "x1@attacker.example")
	since := time.Now().Add(-time.Hour)
	plan, _ := PlanRemediation(ctx, e.d, "senior-bot", since, "")
	res := ApplyRemediation(ctx, e.d, "carol", plan)
	t.Logf("carol (auditor): %s: %s", res[0].Status, res[0].Message)
	plan, _ = PlanRemediation(ctx, e.d, "senior-bot", since, "")
	res = ApplyRemediation(ctx, e.d, "alice", plan)
	t.Logf("alice (supervisor): %s: %s", res[0].Status, res[0].Message)
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Email != "ada@example.com" {
		t.Fatalf("email still %q: a refused auditor's run blocked the supervisor's revert", c.Email)
	}
}

// TestRetryIsAGuardedRead: a retry with a used idempotency key is answered
// from the record, which may hold a customer's details, so it is decided
// and recorded as a read of the agent's own action (get_action_status):
// refused and audited once the live rules no longer let the agent read,
// and recorded before it is shown while they do (a review found retries
// answered, unrecorded, for an agent stripped of every right).
func TestRetryIsAGuardedRead(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	upd := map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000111", "reason": "asked", "idempotency_key": "k-upd"}
	var first ActionResult
	e.call(t, "demo-agent", "update_account", upd, &first)
	if first.Status != storage.StatusExecuted {
		t.Fatalf("first: %+v", first)
	}
	count := func() int {
		n := 0
		e.d.DB.Records(ctx, storage.Filter{Agent: "demo-agent", Tool: "get_action_status"}, func(*storage.Record) error { n++; return nil })
		return n
	}
	var again ActionResult
	e.call(t, "demo-agent", "update_account", upd, &again)
	if again.ActionID != first.ActionID || count() != 1 {
		t.Fatalf("a retry under rules that allow it: %+v, %d read records; want the first action's answer, recorded once", again, count())
	}

	revoked := strings.ReplaceAll(string(mandate.DefaultPolicy), "g, demo-agent, support_agent", "g, demo-agent, nobody_role\np, nobody_role, get_order, true, deny")
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: []byte(revoked)})
	if err != nil {
		t.Fatal(err)
	}
	e.d.Policy.Swap(pol)
	if err := e.d.DB.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	res := e.raw(t, "demo-agent", "update_account", upd)
	if !res.IsError || strings.Contains(resultText(res), "441234000111") || count() != 2 {
		t.Fatalf("a retry after the agent's rights were revoked: isError %v, %s; %d read records, want a refusal, audited", res.IsError, resultText(res), count())
	}
}
