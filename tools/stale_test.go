package tools_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

// TestActionsRefusedUnderAPolicyThatIsNotLive: once another process
// records a newer live policy, this server's actions are denied (and
// audited) until it holds that version, even though its own policy would
// allow them. So are its lookups: the live policy may be the one that
// stopped an agent reading customers' data (a review found a stale server
// still showing them).
func TestActionsRefusedUnderAPolicyThatIsNotLive(t *testing.T) {
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	ctx := tools.WithAgent(context.Background(), "tester")
	args := map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "stale test"}
	if o := decode(t, h.call(ctx, "refund_order", args)); o.Decision != policy.Allow {
		t.Fatalf("under the live policy: %+v, want allow", o)
	}
	other := shippedPolicy(t)
	if err := h.db.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: other.Version, Command: "admin reload"}); err != nil {
		t.Fatal(err)
	}
	writes := len(h.be.refunds)
	o := decode(t, h.call(ctx, "refund_order", args))
	if o.Decision != policy.Deny || !strings.Contains(o.Rule, "the live policy is "+other.Version) {
		t.Fatalf("under a stale policy: %+v, want a deny naming the live version", o)
	}
	if len(h.be.refunds) != writes {
		t.Fatalf("the backend refunded under a stale policy")
	}
	// The first refund's outcome is written behind its answer and may be
	// committed after this refusal: find the refusal by its action.
	var last *storage.Record
	for _, r := range h.records() {
		if r.ActionID == o.ActionID {
			last = &r
		}
	}
	if last == nil || last.Decision != policy.Deny || last.Outcome != "refused" || !strings.Contains(last.Rule, other.Version) {
		t.Fatalf("audit of the refusal: %+v", last)
	}
	look := map[string]any{"order_id": "ord_1001"}
	if o := decode(t, h.call(ctx, "get_order", look)); o.Error != "unavailable" || !strings.Contains(o.Message, "not the live ones") {
		t.Fatalf("a lookup under a stale policy: %+v, want it refused", o)
	}
	var refused *storage.Record
	for _, r := range h.records() {
		if r.Tool == "get_order" {
			refused = &r
		}
	}
	if refused == nil || refused.Decision != policy.Deny || !strings.Contains(refused.Rule, other.Version) {
		t.Fatalf("audit of the refused lookup: %+v", refused)
	}
	// Reloaded to the live version (its own files changed): it decides again.
	h.deps.Policy.Swap(other)
	if o := decode(t, h.call(ctx, "refund_order", args)); strings.Contains(o.Rule, "live policy") {
		t.Fatalf("after reloading: %+v, still refused as stale", o)
	}
	if o := decode(t, h.call(ctx, "get_order", look)); strings.Contains(o.Message, "not the live ones") {
		t.Fatalf("a lookup after reloading: %+v, still refused as stale", o)
	}
}

// TestLookupRightAfterAReload: a lookup's view of the live version is
// cached, but a process that has just reloaded (and recorded) a new
// version is not refused for the cache's age: a cached version that
// differs from the one held is read again at once.
func TestLookupRightAfterAReload(t *testing.T) {
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	ctx := tools.WithAgent(context.Background(), "tester")
	look := map[string]any{"order_id": "ord_1001"}
	if o := decode(t, h.call(ctx, "get_order", look)); o.Error != "" {
		t.Fatalf("before the reload: %+v", o) // the cache now holds the first version
	}
	next := policyFrom(t, allowAllBut("cancel_order"))
	if err := h.db.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: next.Version, Command: "reload"}); err != nil {
		t.Fatal(err)
	}
	h.deps.Policy.Swap(next)
	if o := decode(t, h.call(ctx, "get_order", look)); o.Error != "" {
		t.Fatalf("right after the reload: %+v, want it answered", o)
	}
}
