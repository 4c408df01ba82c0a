package policy

import (
	"os"
	"slices"
	"testing"
)

// TestDirectMatchesCasbin holds decideDirect to Casbin's Enforce: for every
// name in the shipped policy (identities, roles, and a stranger), every tool
// and a grid of attribute sets, including missing attributes and values of
// the wrong type, both give the same effect, rule and reason.
func TestDirectMatchesCasbin(t *testing.T) {
	model, err := os.ReadFile("../model.conf")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := os.ReadFile("../policy.csv")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Load(Source{Name: "model.conf", Data: model}, Source{Name: "policy.csv", Data: pol})
	if err != nil {
		t.Fatal(err)
	}
	if !p.direct {
		t.Fatal("the shipped matcher is not recognised, so decisions go through Casbin: the test would compare Casbin with itself")
	}
	var attrSets []map[string]any
	for _, amount := range []float64{0.01, 30, 50, 50.01, 120, 200, 200.01, 499, 500, 1999, 2000, 2500} {
		for _, age := range []float64{0, 6.9, 7, 400} {
			for _, used := range []float64{0, 450, 4990} {
				attrSets = append(attrSets, map[string]any{
					AttrAmount: amount, AttrCurrency: "USD", AttrOrderTotal: 2500.0, AttrOrderRefunded: 0.0,
					AttrOrderRefundable: 1000.0, AttrOrderStatus: "delivered", AttrCustomerAgeDays: age,
					AttrAgentRefunded24h: used, AttrAgentRefunds24h: 1.0, AttrCustomerRefunds30d: 0.0,
				})
			}
		}
	}
	for _, status := range []string{"pending", "processing", "shipped", "delivered", "cancelled"} {
		attrSets = append(attrSets, map[string]any{AttrCurrency: "EUR", AttrOrderTotal: 80.0, AttrOrderRefunded: 0.0,
			AttrOrderStatus: status, AttrCustomerAgeDays: 30.0, AttrAgentCancellations1h: 2.0})
	}
	for _, field := range []string{"phone", "email", "name", "shipping_address", "password"} {
		attrSets = append(attrSets, map[string]any{AttrField: field, AttrCustomerAgeDays: 3.0})
	}
	attrSets = append(attrSets,
		map[string]any{},                    // every attribute missing
		map[string]any{AttrAmount: "30.00"}, // a string where a number belongs
		map[string]any{AttrAmount: 30.0, AttrOrderRefundable: 100.0}, // some missing
	)
	names := append(p.Names(), "stranger", "")
	tools := make([]string, 0, len(Tools))
	for tool := range Tools {
		tools = append(tools, tool)
	}
	slices.Sort(tools)
	compared, errorsSeen := 0, 0
	for _, name := range names {
		for _, tool := range tools {
			if !p.identities[name] {
				continue // refused before any rule is looked at, on either path
			}
			sh, err := p.shardOf(name, tool)
			if err != nil {
				t.Fatal(err)
			}
			if len(sh.rules) == 0 {
				continue
			}
			for i, attrs := range attrSets {
				req := Request{Agent: name, Tool: tool, Attrs: attrs}
				got, want := p.decideDirect(sh, req), p.decideCasbin(sh, req)
				if got.Effect != want.Effect || got.Rule != want.Rule || got.Reason != want.Reason {
					t.Errorf("%s %s attrs #%d %v:\n direct %s %s %q\n casbin %s %s %q", name, tool, i, attrs,
						got.Effect, got.RuleText(), got.Reason, want.Effect, want.RuleText(), want.Reason)
				}
				if want.Reason != "" && want.Rule == nil {
					errorsSeen++
				}
				compared++
			}
		}
	}
	if compared < 1000 || errorsSeen == 0 {
		t.Fatalf("compared %d decisions, %d refusals without a rule: too few to mean anything", compared, errorsSeen)
	}
	t.Logf("%d decisions alike", compared)
}

// TestDecideAllocations keeps the shipped policy's decision cheap: a small
// refund allowed, one needing approval, one refused, a lookup.
func TestDecideAllocations(t *testing.T) {
	model, _ := os.ReadFile("../model.conf")
	pol, _ := os.ReadFile("../policy.csv")
	p, err := Load(Source{Name: "model.conf", Data: model}, Source{Name: "policy.csv", Data: pol})
	if err != nil {
		t.Fatal(err)
	}
	refund := func(amount float64) map[string]any {
		return map[string]any{AttrAmount: amount, AttrAmountBase: amount, AttrOrderTotalBase: 5000.0, AttrCurrency: "USD", AttrOrderTotal: 5000.0, AttrOrderRefunded: 0.0,
			AttrOrderRefundable: 5000.0, AttrOrderStatus: "processing", AttrCustomerAgeDays: 400.0,
			AttrAgentRefunded24h: 0.0, AttrAgentRefunds24h: 0.0, AttrCustomerRefunds30d: 0.0}
	}
	reqs := []struct {
		req  Request
		want string
	}{
		{Request{Agent: "demo-agent", Tool: "refund_order", Attrs: refund(30)}, Allow},
		{Request{Agent: "demo-agent", Tool: "refund_order", Attrs: refund(120)}, RequireApproval},
		{Request{Agent: "demo-agent", Tool: "refund_order", Attrs: refund(300)}, Deny},
		{Request{Agent: "demo-agent", Tool: "get_order", Attrs: map[string]any{}}, Allow},
	}
	for _, r := range reqs {
		if d := p.Decide(r.req); d.Effect != r.want {
			t.Fatalf("%s: %s (%s), want %s", r.req.Tool, d.Effect, d.RuleText(), r.want)
		}
		if n := testing.AllocsPerRun(100, func() { p.Decide(r.req) }); n > 10 {
			t.Errorf("%s %v: %.0f allocations per decision, want at most 10", r.req.Tool, r.req.Attrs[AttrAmount], n)
		}
	}
}
