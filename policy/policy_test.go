package policy_test

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

// The shipped rules under test, as written in policy.csv. Tests find each
// one's line by searching the file for this text, so editing comments or
// reordering the file does not break them, and a rule whose text changes
// fails loudly instead of being tested against the wrong line.
const (
	ruleOverRefundable = "p, *, refund_order, amount > order_refundable, deny"
	ruleYoungAccount   = "p, *, refund_order, customer_age_days < 7, require_approval"

	ruleGetOrder       = "p, support_agent, get_order, true, allow"
	ruleGetCustomer    = "p, support_agent, get_customer, true, allow"
	ruleFindCustomer   = "p, support_agent, find_customer, true, allow"
	ruleActionStatus   = "p, support_agent, get_action_status, true, allow"
	ruleSupportSmall   = "p, support_agent, refund_order, amount_base <= 50.00, allow"
	ruleSupportMedium  = "p, support_agent, refund_order, amount_base > 50.00 && amount_base <= 200.00, require_approval"
	ruleSupportLarge   = "p, support_agent, refund_order, amount_base > 200.00, deny"
	ruleCancelUnsent   = "p, support_agent, cancel_order, order_status == 'pending' || order_status == 'processing', allow"
	ruleCancelSent     = "p, support_agent, cancel_order, order_status == 'shipped' || order_status == 'delivered' || order_status == 'cancelled', deny"
	ruleSupportContact = "p, support_agent, update_account, field == 'phone' || field == 'shipping_address' || field == 'name', allow"
	ruleSupportEmail   = "p, support_agent, update_account, field == 'email', require_approval"

	ruleSeniorSmall   = "p, senior_agent, refund_order, amount_base <= 500.00, allow"
	ruleSeniorMedium  = "p, senior_agent, refund_order, amount_base > 500.00 && amount_base <= 2000.00, require_approval"
	ruleSeniorLarge   = "p, senior_agent, refund_order, amount_base > 2000.00, deny"
	ruleSeniorContact = "p, senior_agent, update_account, field == 'phone' || field == 'shipping_address' || field == 'name' || field == 'email', allow"

	ruleApproveRefund = "p, supervisor, approve_refund_order, amount_base <= 2000.00, allow"
	ruleApproveCancel = "p, supervisor, approve_cancel_order, true, allow"
	ruleApproveUpdate = "p, supervisor, approve_update_account, true, allow"
	ruleSuspend       = "p, supervisor, suspend_agent, true, allow"
	ruleResume        = "p, supervisor, resume_agent, true, allow"
	ruleRevertUpdate  = "p, supervisor, revert_update_account, true, allow"

	ruleSupportDaily    = "p, support_agent, refund_order, agent_refunded_24h + amount_base > 500.00, require_approval"
	ruleSeniorDaily     = "p, senior_agent, refund_order, agent_refunded_24h + amount_base > 5000.00, require_approval"
	ruleCustomerRefunds = "p, *, refund_order, customer_refunds_30d >= 3, require_approval"
	ruleCancelBurst     = "p, support_agent, cancel_order, agent_cancellations_1h >= 20, deny"
)

// Identities granted a role in the shipped policy.
const (
	agentSupport    = "demo-agent" // support_agent
	agentSenior     = "senior-bot" // senior_agent, which inherits support_agent
	agentSupervisor = "alice"      // supervisor
)

// shippedLoad loads the real ../model.conf and ../policy.csv from disk.
func shippedLoad(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.Load(shippedSource(t, "model.conf"), shippedSource(t, "policy.csv"))
	if err != nil {
		t.Fatalf("the shipped policy does not load: %v", err)
	}
	return p
}

// shippedSource reads a file at the repo root, named as the admin sees it.
func shippedSource(t testing.TB, name string) policy.Source {
	t.Helper()
	b, err := os.ReadFile("../" + name)
	if err != nil {
		t.Fatal(err)
	}
	return policy.Source{Name: name, Data: b}
}

// lineOf returns the 1-based line of path whose trimmed text is exactly
// text, failing unless there is exactly one.
func lineOfText(t testing.TB, path, text string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for i, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == text {
			if found != 0 {
				t.Fatalf("%s: %q is on lines %d and %d", path, text, found, i+1)
			}
			found = i + 1
		}
	}
	if found == 0 {
		t.Fatalf("%s: no line reads %q", path, text)
	}
	return found
}

// major is what the guard puts in attributes for an amount: the decimal
// string parsed as money in USD, in major units.
func usd(t testing.TB, s string) float64 {
	t.Helper()
	m, err := mandate.ParseMoney(s, "USD")
	if err != nil {
		t.Fatal(err)
	}
	return m.Major()
}

// refundFacts is every attribute refund_order supplies: an order of 5000.00
// USD, processing, of which refundable is still refundable, for a customer
// whose account is ageDays old, with no earlier refunds in any window.
func refundFacts(t testing.TB, amount, refundable string, ageDays float64) map[string]any {
	total := usd(t, "5000.00")
	left := usd(t, refundable)
	return map[string]any{
		"amount": usd(t, amount), "amount_base": usd(t, amount), "currency": "USD", "order_total": total, "order_total_base": total,
		"order_refunded": total - left, "order_refundable": left,
		"order_status": "processing", "customer_age_days": ageDays,
		"agent_refunded_24h": 0.0, "agent_refunds_24h": 0.0, "customer_refunds_30d": 0.0,
	}
}

// cancelFacts is every attribute cancel_order supplies for an order in status.
func cancelFacts(status string) map[string]any {
	return map[string]any{
		"currency": "USD", "order_total": 120.0, "order_total_base": 120.0, "order_refunded": 0.0,
		"order_status": status, "customer_age_days": 400.0, "agent_cancellations_1h": 0.0,
	}
}

// updateFacts is every attribute update_account supplies.
func updateFacts(field string) map[string]any {
	return map[string]any{"field": field, "customer_age_days": 400.0}
}

// with returns a copy of attrs with key set to v.
func factsWith(attrs map[string]any, key string, v any) map[string]any {
	out := factsWithout(attrs, key)
	out[key] = v
	return out
}

// without returns a copy of attrs lacking key.
func factsWithout(attrs map[string]any, key string) map[string]any {
	out := map[string]any{}
	for k, v := range attrs {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func TestShippedPolicy(t *testing.T) {
	p := shippedLoad(t)
	old := 400.0 // days: an established customer

	cases := []struct {
		name   string
		agent  string
		tool   string
		attrs  map[string]any
		effect string
		// rule is the deciding rule's text; "" means no rule decided and
		// Decision.Rule must be nil, with reason in Decision.Reason.
		rule string
		// tie is another rule of the winning effect that also matches; the
		// decision may name either.
		tie    string
		reason string
	}{
		// support_agent refund tiers, at the boundaries.
		{name: "support refund 0.01", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "0.01", "5000.00", old), effect: policy.Allow, rule: ruleSupportSmall},
		{name: "support refund 50.00", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "50.00", "5000.00", old), effect: policy.Allow, rule: ruleSupportSmall},
		{name: "support refund 50.01", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "50.01", "5000.00", old), effect: policy.RequireApproval, rule: ruleSupportMedium},
		{name: "support refund 200.00", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "200.00", "5000.00", old), effect: policy.RequireApproval, rule: ruleSupportMedium},
		{name: "support refund 200.01", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "200.01", "5000.00", old), effect: policy.Deny, rule: ruleSupportLarge},

		// senior_agent tiers: its own rules replace the support agent's, so
		// 200.01 is not denied and 50.01 needs no approval.
		{name: "senior refund 50.01", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "50.01", "5000.00", old), effect: policy.Allow, rule: ruleSeniorSmall},
		{name: "senior refund 200.01", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "200.01", "5000.00", old), effect: policy.Allow, rule: ruleSeniorSmall},
		{name: "senior refund 500.00", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "500.00", "5000.00", old), effect: policy.Allow, rule: ruleSeniorSmall},
		{name: "senior refund 500.01", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "500.01", "5000.00", old), effect: policy.RequireApproval, rule: ruleSeniorMedium},
		{name: "senior refund 2000.00", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "2000.00", "5000.00", old), effect: policy.RequireApproval, rule: ruleSeniorMedium},
		{name: "senior refund 2000.01", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "2000.01", "5000.00", old), effect: policy.Deny, rule: ruleSeniorLarge},

		// More than is refundable: denied for everyone, however small.
		{name: "support refund above refundable", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "30.00", "20.00", old), effect: policy.Deny, rule: ruleOverRefundable},
		{name: "senior refund above refundable", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "30.00", "20.00", old), effect: policy.Deny, rule: ruleOverRefundable},
		{name: "support refund one cent above refundable", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "0.02", "0.01", old), effect: policy.Deny, rule: ruleOverRefundable},
		{name: "support refund exactly refundable", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "20.00", "20.00", old), effect: policy.Allow, rule: ruleSupportSmall},
		{name: "senior refund nothing left", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "0.01", "0.00", old), effect: policy.Deny, rule: ruleOverRefundable},

		// Young accounts: approval beats allow, never softens a deny.
		{name: "support refund account 0 days", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "10.00", "100.00", 0), effect: policy.RequireApproval, rule: ruleYoungAccount},
		{name: "support refund account 3 days", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "10.00", "100.00", 3), effect: policy.RequireApproval, rule: ruleYoungAccount},
		{name: "support refund account 6.99 days", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "10.00", "100.00", 6.99), effect: policy.RequireApproval, rule: ruleYoungAccount},
		{name: "support refund account exactly 7 days", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "10.00", "100.00", 7), effect: policy.Allow, rule: ruleSupportSmall},
		{name: "senior refund account 2 days", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "300.00", "5000.00", 2), effect: policy.RequireApproval, rule: ruleYoungAccount},
		{name: "senior refund account exactly 7 days", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "300.00", "5000.00", 7), effect: policy.Allow, rule: ruleSeniorSmall},
		{name: "support young account over limit", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "300.00", "5000.00", 2), effect: policy.Deny, rule: ruleSupportLarge},
		{name: "senior young account over limit", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "2500.00", "5000.00", 2), effect: policy.Deny, rule: ruleSeniorLarge},
		{name: "support young account above refundable", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "30.00", "20.00", 2), effect: policy.Deny, rule: ruleOverRefundable},
		{name: "support young account medium refund", agent: agentSupport, tool: "refund_order", attrs: refundFacts(t, "100.00", "5000.00", 2), effect: policy.RequireApproval, rule: ruleYoungAccount, tie: ruleSupportMedium},
		{name: "senior young account medium refund", agent: agentSenior, tool: "refund_order", attrs: refundFacts(t, "600.00", "5000.00", 2), effect: policy.RequireApproval, rule: ruleYoungAccount, tie: ruleSeniorMedium},

		// Limits over time: an approval beats an allow, never a deny, and a
		// senior's own window replaces the support agent's.
		{name: "support refund reaching 500.00 in 24h", agent: agentSupport, tool: "refund_order", attrs: factsWith(refundFacts(t, "40.00", "5000.00", old), "agent_refunded_24h", usd(t, "460.00")), effect: policy.Allow, rule: ruleSupportSmall},
		{name: "support refund passing 500.00 in 24h", agent: agentSupport, tool: "refund_order", attrs: factsWith(refundFacts(t, "40.00", "5000.00", old), "agent_refunded_24h", usd(t, "460.01")), effect: policy.RequireApproval, rule: ruleSupportDaily},
		{name: "support medium refund passing 500.00 in 24h", agent: agentSupport, tool: "refund_order", attrs: factsWith(refundFacts(t, "60.00", "5000.00", old), "agent_refunded_24h", usd(t, "450.00")), effect: policy.RequireApproval, rule: ruleSupportMedium, tie: ruleSupportDaily},
		{name: "support large refund passing 500.00 in 24h", agent: agentSupport, tool: "refund_order", attrs: factsWith(refundFacts(t, "300.00", "5000.00", old), "agent_refunded_24h", usd(t, "400.00")), effect: policy.Deny, rule: ruleSupportLarge},
		{name: "senior refund past the support daily limit", agent: agentSenior, tool: "refund_order", attrs: factsWith(refundFacts(t, "100.00", "5000.00", old), "agent_refunded_24h", usd(t, "600.00")), effect: policy.Allow, rule: ruleSeniorSmall},
		{name: "senior refund reaching 5000.00 in 24h", agent: agentSenior, tool: "refund_order", attrs: factsWith(refundFacts(t, "400.00", "5000.00", old), "agent_refunded_24h", usd(t, "4600.00")), effect: policy.Allow, rule: ruleSeniorSmall},
		{name: "senior refund passing 5000.00 in 24h", agent: agentSenior, tool: "refund_order", attrs: factsWith(refundFacts(t, "400.00", "5000.00", old), "agent_refunded_24h", usd(t, "4600.01")), effect: policy.RequireApproval, rule: ruleSeniorDaily},
		{name: "support refund customer's second in 30d", agent: agentSupport, tool: "refund_order", attrs: factsWith(refundFacts(t, "10.00", "5000.00", old), "customer_refunds_30d", 2.0), effect: policy.Allow, rule: ruleSupportSmall},
		{name: "support refund customer's third in 30d", agent: agentSupport, tool: "refund_order", attrs: factsWith(refundFacts(t, "10.00", "5000.00", old), "customer_refunds_30d", 3.0), effect: policy.RequireApproval, rule: ruleCustomerRefunds},
		{name: "senior refund customer's third in 30d", agent: agentSenior, tool: "refund_order", attrs: factsWith(refundFacts(t, "10.00", "5000.00", old), "customer_refunds_30d", 3.0), effect: policy.RequireApproval, rule: ruleCustomerRefunds},
		{name: "support cancel 19th in an hour", agent: agentSupport, tool: "cancel_order", attrs: factsWith(cancelFacts("pending"), "agent_cancellations_1h", 19.0), effect: policy.Allow, rule: ruleCancelUnsent},
		{name: "support cancel 20th in an hour", agent: agentSupport, tool: "cancel_order", attrs: factsWith(cancelFacts("pending"), "agent_cancellations_1h", 20.0), effect: policy.Deny, rule: ruleCancelBurst},
		{name: "senior cancel 20th in an hour", agent: agentSenior, tool: "cancel_order", attrs: factsWith(cancelFacts("processing"), "agent_cancellations_1h", 20.0), effect: policy.Deny, rule: ruleCancelBurst},

		// Approvals are decided for the approver; agents cannot approve, and
		// approvers have no action rights of their own.
		{name: "supervisor approves refund of 2000.00", agent: agentSupervisor, tool: "approve_refund_order", attrs: refundFacts(t, "2000.00", "5000.00", old), effect: policy.Allow, rule: ruleApproveRefund},
		{name: "supervisor approves refund of 2000.01", agent: agentSupervisor, tool: "approve_refund_order", attrs: refundFacts(t, "2000.01", "5000.00", old), effect: policy.Deny, reason: "no rule matched"},
		{name: "other supervisor approves cancel", agent: "bob", tool: "approve_cancel_order", attrs: cancelFacts("pending"), effect: policy.Allow, rule: ruleApproveCancel},
		{name: "supervisor approves email change", agent: agentSupervisor, tool: "approve_update_account", attrs: updateFacts("email"), effect: policy.Allow, rule: ruleApproveUpdate},
		{name: "supervisor suspends an agent", agent: agentSupervisor, tool: "suspend_agent", attrs: map[string]any{}, effect: policy.Allow, rule: ruleSuspend},
		{name: "supervisor resumes an agent", agent: agentSupervisor, tool: "resume_agent", attrs: map[string]any{}, effect: policy.Allow, rule: ruleResume},
		{name: "supervisor reverts an email change", agent: agentSupervisor, tool: "revert_update_account", attrs: updateFacts("email"), effect: policy.Allow, rule: ruleRevertUpdate},
		{name: "an agent cannot suspend", agent: agentSenior, tool: "suspend_agent", attrs: map[string]any{}, effect: policy.Deny, reason: "no rule"},
		{name: "an agent cannot revert", agent: agentSupport, tool: "revert_update_account", attrs: updateFacts("email"), effect: policy.Deny, reason: "no rule"},
		{name: "a supervisor is no agent", agent: agentSupervisor, tool: "update_account", attrs: updateFacts("email"), effect: policy.Deny, reason: "no rule"},
		{name: "support agent approves refund", agent: agentSupport, tool: "approve_refund_order", attrs: refundFacts(t, "10.00", "5000.00", old), effect: policy.Deny, reason: "no rule matched"},
		{name: "senior agent approves cancel", agent: agentSenior, tool: "approve_cancel_order", attrs: cancelFacts("pending"), effect: policy.Deny, reason: "no rule matched"},
		{name: "supervisor refunds", agent: agentSupervisor, tool: "refund_order", attrs: refundFacts(t, "10.00", "5000.00", old), effect: policy.Deny, reason: "no rule matched"},

		// cancel_order in each status; the senior agent has no cancel rules
		// of its own and inherits these.
		{name: "support cancel pending", agent: agentSupport, tool: "cancel_order", attrs: cancelFacts("pending"), effect: policy.Allow, rule: ruleCancelUnsent},
		{name: "support cancel processing", agent: agentSupport, tool: "cancel_order", attrs: cancelFacts("processing"), effect: policy.Allow, rule: ruleCancelUnsent},
		{name: "support cancel shipped", agent: agentSupport, tool: "cancel_order", attrs: cancelFacts("shipped"), effect: policy.Deny, rule: ruleCancelSent},
		{name: "support cancel delivered", agent: agentSupport, tool: "cancel_order", attrs: cancelFacts("delivered"), effect: policy.Deny, rule: ruleCancelSent},
		{name: "support cancel cancelled", agent: agentSupport, tool: "cancel_order", attrs: cancelFacts("cancelled"), effect: policy.Deny, rule: ruleCancelSent},
		{name: "senior cancel pending", agent: agentSenior, tool: "cancel_order", attrs: cancelFacts("pending"), effect: policy.Allow, rule: ruleCancelUnsent},
		{name: "senior cancel processing", agent: agentSenior, tool: "cancel_order", attrs: cancelFacts("processing"), effect: policy.Allow, rule: ruleCancelUnsent},
		{name: "senior cancel shipped", agent: agentSenior, tool: "cancel_order", attrs: cancelFacts("shipped"), effect: policy.Deny, rule: ruleCancelSent},
		{name: "senior cancel delivered", agent: agentSenior, tool: "cancel_order", attrs: cancelFacts("delivered"), effect: policy.Deny, rule: ruleCancelSent},
		{name: "senior cancel cancelled", agent: agentSenior, tool: "cancel_order", attrs: cancelFacts("cancelled"), effect: policy.Deny, rule: ruleCancelSent},
		{name: "support cancel unknown status", agent: agentSupport, tool: "cancel_order", attrs: cancelFacts("returned"), effect: policy.Deny, reason: "no rule matched"},

		// update_account, each field; the senior's own rules replace the
		// support agent's, so email needs no approval.
		{name: "support update phone", agent: agentSupport, tool: "update_account", attrs: updateFacts("phone"), effect: policy.Allow, rule: ruleSupportContact},
		{name: "support update shipping_address", agent: agentSupport, tool: "update_account", attrs: updateFacts("shipping_address"), effect: policy.Allow, rule: ruleSupportContact},
		{name: "support update name", agent: agentSupport, tool: "update_account", attrs: updateFacts("name"), effect: policy.Allow, rule: ruleSupportContact},
		{name: "support update email", agent: agentSupport, tool: "update_account", attrs: updateFacts("email"), effect: policy.RequireApproval, rule: ruleSupportEmail},
		{name: "support update unknown field", agent: agentSupport, tool: "update_account", attrs: updateFacts("password"), effect: policy.Deny, reason: "no rule matched"},
		{name: "senior update phone", agent: agentSenior, tool: "update_account", attrs: updateFacts("phone"), effect: policy.Allow, rule: ruleSeniorContact},
		{name: "senior update shipping_address", agent: agentSenior, tool: "update_account", attrs: updateFacts("shipping_address"), effect: policy.Allow, rule: ruleSeniorContact},
		{name: "senior update name", agent: agentSenior, tool: "update_account", attrs: updateFacts("name"), effect: policy.Allow, rule: ruleSeniorContact},
		{name: "senior update email", agent: agentSenior, tool: "update_account", attrs: updateFacts("email"), effect: policy.Allow, rule: ruleSeniorContact},
		{name: "senior update unknown field", agent: agentSenior, tool: "update_account", attrs: updateFacts("password"), effect: policy.Deny, reason: "no rule matched"},

		// Lookups, inherited by the senior agent.
		{name: "support get_order", agent: agentSupport, tool: "get_order", attrs: map[string]any{}, effect: policy.Allow, rule: ruleGetOrder},
		{name: "support get_customer", agent: agentSupport, tool: "get_customer", attrs: map[string]any{}, effect: policy.Allow, rule: ruleGetCustomer},
		{name: "support find_customer", agent: agentSupport, tool: "find_customer", attrs: map[string]any{}, effect: policy.Allow, rule: ruleFindCustomer},
		{name: "support get_action_status", agent: agentSupport, tool: "get_action_status", attrs: map[string]any{}, effect: policy.Allow, rule: ruleActionStatus},
		{name: "senior get_order", agent: agentSenior, tool: "get_order", attrs: map[string]any{}, effect: policy.Allow, rule: ruleGetOrder},
		{name: "senior get_customer", agent: agentSenior, tool: "get_customer", attrs: map[string]any{}, effect: policy.Allow, rule: ruleGetCustomer},
		{name: "senior find_customer", agent: agentSenior, tool: "find_customer", attrs: map[string]any{}, effect: policy.Allow, rule: ruleFindCustomer},
		{name: "senior get_action_status", agent: agentSenior, tool: "get_action_status", attrs: nil, effect: policy.Allow, rule: ruleActionStatus},

		// Unknown identities and tools.
		{name: "unknown identity lookup", agent: "intruder", tool: "get_order", attrs: map[string]any{}, effect: policy.Deny, reason: `unknown identity "intruder"`},
		{name: "unknown identity small refund", agent: "intruder", tool: "refund_order", attrs: refundFacts(t, "1.00", "5000.00", old), effect: policy.Deny, reason: `unknown identity "intruder"`},
		{name: "empty identity", agent: "", tool: "get_order", attrs: map[string]any{}, effect: policy.Deny, reason: `unknown identity ""`},
		{name: "identity differing in case", agent: "Demo-Agent", tool: "get_order", attrs: map[string]any{}, effect: policy.Deny, reason: "unknown identity"},
		{name: "unknown tool", agent: agentSupport, tool: "delete_customer", attrs: map[string]any{}, effect: policy.Deny, reason: `unknown tool "delete_customer"`},
		{name: "tool differing in case", agent: agentSenior, tool: "Refund_Order", attrs: refundFacts(t, "1.00", "5000.00", old), effect: policy.Deny, reason: "unknown tool"},

		// Missing or mistyped attributes fail closed.
		{name: "refund without order_refundable", agent: agentSupport, tool: "refund_order", attrs: factsWithout(refundFacts(t, "1.00", "5000.00", old), "order_refundable"), effect: policy.Deny, reason: "order_refundable"},
		{name: "senior refund without order_refundable", agent: agentSenior, tool: "refund_order", attrs: factsWithout(refundFacts(t, "1.00", "5000.00", old), "order_refundable"), effect: policy.Deny, reason: "order_refundable"},
		{name: "refund without customer_age_days", agent: agentSupport, tool: "refund_order", attrs: factsWithout(refundFacts(t, "1.00", "5000.00", old), "customer_age_days"), effect: policy.Deny, reason: "customer_age_days"},
		{name: "refund without amount", agent: agentSenior, tool: "refund_order", attrs: factsWithout(refundFacts(t, "1.00", "5000.00", old), "amount"), effect: policy.Deny, reason: "amount"},
		{name: "refund without attributes", agent: agentSupport, tool: "refund_order", attrs: nil, effect: policy.Deny, reason: "policy error"},
		{name: "refund amount as text", agent: agentSupport, tool: "refund_order", attrs: map[string]any{
			"amount": "1.00", "currency": "USD", "order_total": 5000.0, "order_refunded": 0.0,
			"order_refundable": 5000.0, "order_status": "processing", "customer_age_days": old,
		}, effect: policy.Deny, reason: "policy error"},
		{name: "cancel without order_status", agent: agentSupport, tool: "cancel_order", attrs: factsWithout(cancelFacts("pending"), "order_status"), effect: policy.Deny, reason: "order_status"},
		{name: "update without field", agent: agentSenior, tool: "update_account", attrs: factsWithout(updateFacts("phone"), "field"), effect: policy.Deny, reason: "field"},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := p.Decide(policy.Request{Agent: c.agent, Tool: c.tool, Attrs: c.attrs})
			if d.Effect != c.effect {
				t.Fatalf("effect = %s (%s), want %s", d.Effect, d.RuleText(), c.effect)
			}
			if d.Version != p.Version {
				t.Fatalf("version = %q, want %q", d.Version, p.Version)
			}
			if c.rule == "" {
				if d.Rule != nil {
					t.Fatalf("rule = %s, want none", d.Rule)
				}
				if !strings.Contains(d.Reason, c.reason) {
					t.Fatalf("reason = %q, want it to contain %q", d.Reason, c.reason)
				}
				return
			}
			if d.Rule == nil {
				t.Fatalf("no rule (reason %q), want %s", d.Reason, c.rule)
			}
			got := d.Rule.String()
			want := fmt.Sprintf("policy.csv:%d: %s", lineOfText(t, "../policy.csv", c.rule), c.rule)
			if got != want && c.tie != "" {
				want = fmt.Sprintf("policy.csv:%d: %s", lineOfText(t, "../policy.csv", c.tie), c.tie)
			}
			if got != want {
				t.Fatalf("rule = %s, want %s", got, want)
			}
			if d.Rule.Effect != d.Effect {
				t.Fatalf("decision %s names a %s rule", d.Effect, d.Rule.Effect)
			}
		})
	}
}

// TestShippedRulesAreCovered checks that every p line of the shipped policy
// is one of the rules TestShippedPolicy expects, so a new rule cannot slip
// in untested.
func TestShippedRulesAreCovered(t *testing.T) {
	tested := map[string]bool{}
	for _, r := range []string{
		ruleOverRefundable, ruleYoungAccount, ruleGetOrder, ruleGetCustomer, ruleFindCustomer,
		ruleActionStatus, ruleSupportSmall, ruleSupportMedium, ruleSupportLarge, ruleCancelUnsent,
		ruleCancelSent, ruleSupportContact, ruleSupportEmail, ruleSeniorSmall, ruleSeniorMedium,
		ruleSeniorLarge, ruleSeniorContact, ruleApproveRefund, ruleApproveCancel, ruleApproveUpdate,
		ruleSupportDaily, ruleSeniorDaily, ruleCustomerRefunds, ruleCancelBurst,
		ruleSuspend, ruleResume, ruleRevertUpdate,
	} {
		tested[r] = true
	}
	p := shippedLoad(t)
	if len(p.Rules) != len(tested) {
		t.Fatalf("policy.csv has %d rules, the tests know %d", len(p.Rules), len(tested))
	}
	for _, r := range p.Rules {
		text := strings.TrimPrefix(r.String(), fmt.Sprintf("%s:%d: ", r.File, r.Line))
		if !tested[text] {
			t.Fatalf("rule %s is not tested", r)
		}
	}
}

// TestShippedFactsMatchSchema checks that the attributes the cases supply
// are exactly those the guard supplies for each tool, so "missing
// attribute" cases remove one that is really there.
func TestShippedFactsMatchSchema(t *testing.T) {
	for tool, attrs := range map[string]map[string]any{
		"refund_order":   refundFacts(t, "1.00", "5000.00", 400),
		"cancel_order":   cancelFacts("pending"),
		"update_account": updateFacts("email"),
	} {
		for _, name := range []string{tool, policy.ApprovalPrefix + tool} {
			want := slices.Sorted(slices.Values(policy.Tools[name].Attrs))
			got := slices.Sorted(maps.Keys(attrs))
			if !slices.Equal(got, want) {
				t.Fatalf("%s: the tests supply %v, the schema lists %v", name, got, want)
			}
		}
	}
}

// TestEngineSwapUnderLoad swaps between two policies while 16 goroutines
// decide: every decision must be exactly what one whole policy says, with
// that policy's version. Run with -race.
func TestEngineSwapUnderLoad(t *testing.T) {
	model := shippedSource(t, "model.conf")
	src := shippedSource(t, "policy.csv")
	a := shippedLoad(t)

	// b raises the support agent's refund limit to 100.00 and denies email
	// changes outright.
	text := string(src.Data)
	for _, r := range [][2]string{
		{ruleSupportSmall, "p, support_agent, refund_order, amount <= 100.00, allow"},
		{ruleSupportMedium, "p, support_agent, refund_order, amount > 100.00 && amount <= 200.00, require_approval"},
		{ruleSupportEmail, "p, support_agent, update_account, field == 'email', deny"},
	} {
		if strings.Count(text, r[0]) != 1 {
			t.Fatalf("policy.csv does not hold %q exactly once", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	b, err := policy.Load(model, policy.Source{Name: "policy.csv", Data: []byte(text)})
	if err != nil {
		t.Fatal(err)
	}
	if a.Version == b.Version {
		t.Fatal("the two policies have the same version")
	}

	reqs := []policy.Request{
		{Agent: agentSupport, Tool: "refund_order", Attrs: refundFacts(t, "80.00", "5000.00", 400)},
		{Agent: agentSupport, Tool: "refund_order", Attrs: refundFacts(t, "150.00", "5000.00", 400)},
		{Agent: agentSupport, Tool: "update_account", Attrs: updateFacts("email")},
		{Agent: agentSenior, Tool: "update_account", Attrs: updateFacts("email")},
		{Agent: agentSenior, Tool: "refund_order", Attrs: refundFacts(t, "80.00", "5000.00", 3)},
		{Agent: agentSupport, Tool: "get_order", Attrs: map[string]any{}},
		{Agent: "intruder", Tool: "get_order", Attrs: map[string]any{}},
	}
	type outcome struct{ effect, rule string }
	want := map[string][]outcome{}
	for _, p := range []*policy.Policy{a, b} {
		for _, r := range reqs {
			d := p.Decide(r)
			want[p.Version] = append(want[p.Version], outcome{d.Effect, d.RuleText()})
		}
	}
	// The policies must disagree, or a mixed-up decision could not show.
	if got := [2]string{want[a.Version][0].effect, want[b.Version][0].effect}; got != [2]string{policy.RequireApproval, policy.Allow} {
		t.Fatalf("refund of 80.00 by the support agent: %v, want require_approval then allow", got)
	}
	if got := [2]string{want[a.Version][2].effect, want[b.Version][2].effect}; got != [2]string{policy.RequireApproval, policy.Deny} {
		t.Fatalf("email change by the support agent: %v, want require_approval then deny", got)
	}

	e := policy.NewEngine(a)
	var swapped atomic.Bool
	var seenA, seenB atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; i < 40 || !swapped.Load(); i++ {
				n := (g + i) % len(reqs)
				d := e.Decide(reqs[n])
				exp, ok := want[d.Version]
				if !ok {
					t.Errorf("decision with unknown version %q", d.Version)
					return
				}
				if got := (outcome{d.Effect, d.RuleText()}); got != exp[n] {
					t.Errorf("request %d under version %s: got %v, want %v", n, d.Version, got, exp[n])
					return
				}
				if d.Version == a.Version {
					seenA.Add(1)
				} else {
					seenB.Add(1)
				}
			}
		})
	}
	// Decisions take microseconds: keep swapping until the deciders have
	// seen both versions, and stop after swapping a back in.
	for i := 0; i < 400 || seenA.Load() == 0 || seenB.Load() == 0 || i%2 == 1; i++ {
		if i > 10_000_000 {
			t.Fatal("the deciders never saw both versions")
		}
		if i%2 == 0 {
			e.Swap(b)
		} else {
			e.Swap(a)
		}
		runtime.Gosched()
	}
	swapped.Store(true)
	wg.Wait()
	if seenA.Load() == 0 || seenB.Load() == 0 {
		t.Fatalf("decisions per version: %d and %d; the test did not exercise both", seenA.Load(), seenB.Load())
	}
	if got := e.Policy().Version; got != a.Version {
		t.Fatalf("live version after an even number of swaps = %s, want %s", got, a.Version)
	}
}
