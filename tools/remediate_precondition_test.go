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

// hookCustomers is a system of record whose UpdateCustomer first runs
// before, once: a change landing between the guard's read and its write.
type hookCustomers struct {
	backend.Customers
	before func()
}

func (h *hookCustomers) UpdateCustomer(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
	if f := h.before; f != nil {
		h.before = nil
		f()
	}
	return h.Customers.UpdateCustomer(ctx, req)
}

// TestRevertNeverOverwritesANewerValue: the customer changes the field
// after the revert read it (so revertStillDue passed) and before the write.
// The revert carries its precondition, the store refuses it, the
// customer's value stays, the refusal is recorded as changed since, the
// claim is given back, and remediation reports it as skipped. Applying the
// same plan again changes nothing either.
func TestRevertNeverOverwritesANewerValue(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	var r ActionResult
	e.call(t, "senior-bot", "update_account", map[string]any{"customer_id": "cus_ada", "field": "name", "value": "Mallory", "reason": "asked"}, &r)
	if r.Status != storage.StatusExecuted {
		t.Fatalf("agent's change: %+v", r)
	}
	changed := r.ActionID
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-time.Hour), "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	var sent []backend.UpdateRequest
	hook := &hookCustomers{Customers: e.st, before: func() {
		if _, err := e.st.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: "name", Value: "Ada King", IdempotencyKey: "the-customer"}); err != nil {
			t.Error(err)
		}
	}}
	e.d.Backend.Customers = recordingCustomers{hook, &sent}

	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if len(res) != 1 || res[0].Status != "skipped" || res[0].Why != "the customer changed it since" || res[0].RevertID == "" ||
		!strings.Contains(res[0].Message, RevertChangedSince) {
		t.Fatalf("apply: %+v; want skipped, the customer changed it since, with the revert's action id", res)
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Name != "Ada King" {
		t.Fatalf("name = %q: the revert overwrote the customer's newer value", c.Name)
	}
	if len(sent) != 1 || sent[0].Expected != "Mallory" {
		t.Fatalf("sent %+v; want one update expecting the agent's value", sent)
	}
	act, err := e.d.DB.Action(ctx, res[0].RevertID)
	if err != nil || act.Status != storage.StatusFailed || !strings.HasPrefix(act.Error, RevertChangedSince) {
		t.Fatalf("revert action = %+v, %v; want failed, %q", act, err, RevertChangedSince)
	}
	var outcome *storage.Record
	for _, rec := range auditOf(t, e.d.DB, storage.Filter{Agent: "alice", Tool: "update_account"}) {
		if rec.Phase == storage.PhaseOutcome {
			outcome = &rec
		}
	}
	if outcome == nil || outcome.Outcome != storage.StatusFailed || !strings.HasPrefix(outcome.Error, RevertChangedSince) {
		t.Fatalf("outcome record %+v; want failed, %q", outcome, RevertChangedSince)
	}
	// The claim was given back: the next run, by anyone, may claim it.
	c, err := e.d.DB.ClaimRevert(ctx, changed, "bob")
	if err != nil || c.By != "bob" {
		t.Fatalf("ClaimRevert by bob after the skipped revert = %+v, %v; want bob's", c, err)
	}
	if err := e.d.DB.ReleaseRevert(ctx, changed, c); err != nil {
		t.Fatal(err)
	}

	// The same plan again (a retry): read before, found changed, not sent.
	res = ApplyRemediation(ctx, e.d, "bob", plan)
	if len(res) != 1 || res[0].Status != "skipped" || len(sent) != 1 {
		t.Fatalf("applying the plan again: %+v (%d sent); want skipped, nothing sent", res, len(sent))
	}
	if c, _ := e.st.Customer(ctx, "cus_ada"); c.Name != "Ada King" {
		t.Fatalf("name = %q after applying again", c.Name)
	}
}

// TestAgentUpdateHasNoPrecondition: an agent's own update_account sends
// none; only a person's revert does.
func TestAgentUpdateHasNoPrecondition(t *testing.T) {
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	var sent []backend.UpdateRequest
	e.d.Backend.Customers = recordingCustomers{e.st, &sent}
	var r ActionResult
	e.call(t, "senior-bot", "update_account", map[string]any{"customer_id": "cus_ada", "field": "name", "value": "Mallory", "reason": "asked"}, &r)
	if r.Status != storage.StatusExecuted || len(sent) != 1 || sent[0].Expected != "" {
		t.Fatalf("agent's change %+v sent %+v; want one update without a precondition", r, sent)
	}
}

// recordingCustomers records every update request it passes on.
type recordingCustomers struct {
	backend.Customers
	sent *[]backend.UpdateRequest
}

func (c recordingCustomers) UpdateCustomer(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
	*c.sent = append(*c.sent, req)
	return c.Customers.UpdateCustomer(ctx, req)
}
