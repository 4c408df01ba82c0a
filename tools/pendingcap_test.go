package tools_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// askEveryRefund is a policy under which tester's refunds all wait for a
// person.
const askEveryRefund = "p, tester, refund_order, true, require_approval\np, tester, get_order, true, allow\np, approvers, approve_refund_order, true, allow\ng, tester, testers\ng, alice, approvers\n"

// capRefusals returns the attempt records the pending cap refused.
func capRefusals(t *testing.T, db *storage.DB) []storage.Record {
	t.Helper()
	var out []storage.Record
	for _, r := range readRecords(t, db, storage.Filter{}) {
		if r.Phase == storage.PhaseAttempt && strings.HasPrefix(r.Rule, tools.PendingCapRule+": ") {
			out = append(out, r)
		}
	}
	return out
}

// TestPendingCapRefusesAndAudits fills tester's queue to the default cap:
// the next request that needs a person is refused with a message the agent
// can pass on, is audited as a refusal, and never reaches the backend; once
// a person decides one, a new request may wait again.
func TestPendingCapRefusesAndAudits(t *testing.T) {
	ctx := tools.WithAgent(context.Background(), "tester")
	h := newHarness(t, policyFrom(t, askEveryRefund), nil)
	h.db.Now = h.deps.Now // expiry is judged by the database's clock
	for i := 0; i < tools.DefaultMaxPending; i++ {
		if o := decode(t, h.call(ctx, "refund_order", validArgs["refund_order"])); o.Status != storage.StatusPending {
			t.Fatalf("request %d: %s (%s), want pending", i+1, o.Status, o.Message)
		}
	}
	keyed := map[string]any{"idempotency_key": "retry-later"}
	for k, v := range validArgs["refund_order"] {
		keyed[k] = v
	}
	res := h.call(ctx, "refund_order", keyed)
	o := decode(t, res)
	if !res.IsError || o.Status != storage.StatusDenied || o.Decision != policy.Deny {
		t.Fatalf("request %d: %s/%s, want a denied error", tools.DefaultMaxPending+1, o.Decision, o.Status)
	}
	for _, want := range []string{"too many of your requests are already waiting", "someone will follow up", "Do not ask again now"} {
		if !strings.Contains(o.Message, want) {
			t.Fatalf("message %q does not say %q", o.Message, want)
		}
	}
	if !strings.Contains(o.Rule, "already has 100 actions waiting") {
		t.Fatalf("rule %q does not say why", o.Rule)
	}
	refused := capRefusals(t, h.db)
	if len(refused) != 1 || refused[0].Outcome != "refused" || refused[0].Decision != policy.Deny || refused[0].ActionID != o.ActionID {
		t.Fatalf("audit of the refusal: %+v", refused)
	}
	checkNoWrites(t, "refund_order", h.be)
	p, err := h.db.Pending(ctx, storage.PendingFilter{Agent: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != tools.DefaultMaxPending {
		t.Fatalf("pending = %d, want %d", p.Total, tools.DefaultMaxPending)
	}
	if _, err := tools.Deny(ctx, h.deps, p.Actions[0].ID, "alice", "no"); err != nil {
		t.Fatal(err)
	}
	// The refusal did not use up the idempotency key: the same request,
	// tried again once there is room, waits for a person.
	if o := decode(t, h.call(ctx, "refund_order", keyed)); o.Status != storage.StatusPending {
		t.Fatalf("after a decision: %s (%s), want pending", o.Status, o.Message)
	}
	// A read is never capped.
	if res := h.call(ctx, "get_order", validArgs["get_order"]); res.IsError {
		t.Fatalf("get_order at the cap: %s", text(res))
	}
}

// TestPendingCapHoldsAcrossProcesses races two servers of one agent, each
// with its own handle on the database file as two processes have: however
// the calls interleave, no more than the cap are left waiting.
func TestPendingCapHoldsAcrossProcesses(t *testing.T) {
	const maxPending, perServer = 7, 20
	h := newHarness(t, policyFrom(t, askEveryRefund), nil)
	h.deps.MaxPending = maxPending
	db2 := openAt(t, h.path)
	h.db.Now, db2.Now = h.deps.Now, h.deps.Now
	d2 := &tools.Deps{Policy: h.deps.Policy, DB: db2, Backend: backend.Backend{Payments: h.be, Orders: h.be, Customers: h.be},
		Now: h.deps.Now, MaxPending: maxPending}
	ctx := tools.WithAgent(context.Background(), "tester")
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]int{}
	for _, d := range []*tools.Deps{h.deps, d2} {
		handler := concTool(t, d, "refund_order")
		for i := 0; i < perServer; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := handler(ctx, callRequest("refund_order", validArgs["refund_order"]))
				if err != nil {
					t.Error(err)
					return
				}
				o := decode(t, res)
				mu.Lock()
				statuses[o.Status]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if statuses[storage.StatusPending] != maxPending || statuses[storage.StatusDenied] != 2*perServer-maxPending {
		t.Fatalf("outcomes %v, want %d pending and the rest denied", statuses, maxPending)
	}
	p, err := h.db.Pending(context.Background(), storage.PendingFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != maxPending {
		t.Fatalf("pending in the database = %d, want %d", p.Total, maxPending)
	}
	if n := len(capRefusals(t, h.db)); n != 2*perServer-maxPending {
		t.Fatalf("%d refusals audited, want %d", n, 2*perServer-maxPending)
	}
}

// openAt opens a second handle on the database file at path.
func openAt(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func callRequest(name string, args map[string]any) mcp.CallToolRequest {
	return mcp.CallToolRequest{Params: mcp.CallToolParams{Name: name, Arguments: args}}
}
