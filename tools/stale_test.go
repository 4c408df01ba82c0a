package tools_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
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

// TestActionsRefusedWithRatesThatAreNotLive: once another process records
// other exchange rates as live, this server's money decisions (a refund, a
// cancellation: anything whose facts it converted into the base currency)
// are refused, audited as refused before the rules, with a message that
// nothing was done and a retry may work, and the idempotency key left
// free. Lookups convert nothing and are answered. Once this server holds
// the live rates (its watcher reloaded the same file), the same request
// with the same key acts, once.
func TestActionsRefusedWithRatesThatAreNotLive(t *testing.T) {
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	ctx := tools.WithAgent(context.Background(), "tester")
	other, err := rates.Parse("/srv/other/rates.csv", []byte("base, USD\nEUR, 0.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.db.RecordRates(context.Background(), &storage.RatesLoad{Version: other.Version, Base: other.Base, File: other.Name, Command: "serve reload"}); err != nil {
		t.Fatal(err)
	}
	held := h.deps.Rates.Table().Version
	args := map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "stale rates", "idempotency_key": "rk-1"}
	o := decode(t, h.call(ctx, "refund_order", args))
	if o.Decision != policy.Deny || o.Status != storage.StatusDenied ||
		!strings.HasPrefix(o.Rule, "default deny: "+tools.StaleRatesReason) || !strings.Contains(o.Rule, "version "+held) || !strings.Contains(o.Rule, "the live rates are "+other.Version) {
		t.Fatalf("refund with rates that are not live: %+v, want a deny naming both versions", o)
	}
	if !strings.Contains(o.Message, "exchange rates are not the live ones") || !strings.Contains(o.Message, "nothing was changed") || !strings.Contains(o.Message, "Send the same request again") {
		t.Fatalf("message %q does not say nothing was done and a retry may work", o.Message)
	}
	if !tools.RefusedBeforeRules(o.Rule) {
		t.Fatalf("rule %q is not seen as refused before the rules: policy replay would judge it", o.Rule)
	}
	if len(h.be.refunds) != 0 {
		t.Fatalf("the backend refunded with stale rates: %+v", h.be.refunds)
	}
	var last *storage.Record
	for _, r := range h.records() {
		if r.ActionID == o.ActionID {
			last = &r
		}
	}
	if last == nil || last.Decision != policy.Deny || last.Outcome != "refused" || last.Rule != o.Rule {
		t.Fatalf("audit of the refusal: %+v", last)
	}
	if c := decode(t, h.call(ctx, "cancel_order", map[string]any{"order_id": "ord_1004", "reason": "stale rates"})); c.Decision != policy.Deny || !strings.Contains(c.Rule, tools.StaleRatesReason) {
		t.Fatalf("cancellation with rates that are not live: %+v, want refused", c)
	}
	if g := decode(t, h.call(ctx, "get_order", map[string]any{"order_id": "ord_1001"})); g.Error != "" {
		t.Fatalf("a lookup converts nothing, yet was refused: %+v", g)
	}
	// The watcher reloads the same file the other process did.
	h.deps.Rates.Swap(other)
	o = decode(t, h.call(ctx, "refund_order", args))
	if o.Decision != policy.Allow || o.Status != storage.StatusExecuted || len(h.be.refunds) != 1 || h.be.refunds[0].IdempotencyKey != o.ActionID {
		t.Fatalf("the same request and key with the live rates: %+v, %d refunds; want it executed once", o, len(h.be.refunds))
	}
	if again := decode(t, h.call(ctx, "refund_order", args)); again.ActionID != o.ActionID || len(h.be.refunds) != 1 {
		t.Fatalf("a retry after it acted: %+v, %d refunds; want the same action, not a second refund", again, len(h.be.refunds))
	}
}
