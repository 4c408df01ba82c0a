package policy_test

import (
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

func explainDefault(t *testing.T, extra string) *policy.Policy {
	t.Helper()
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: append(append([]byte{}, mandate.DefaultPolicy...), extra...)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func explainAttrs(amount, refundable, age float64, status, field string) map[string]any {
	return map[string]any{
		"amount": amount, "currency": "USD", "order_total": 2500.0, "order_refunded": 2500.0 - refundable,
		"order_refundable": refundable, "order_status": status, "customer_age_days": age, "field": field,
		"agent_refunded_24h": 450.0, "agent_refunds_24h": 3.0, "customer_refunds_30d": 1.0, "agent_cancellations_1h": 0.0,
	}
}

// TestExplainAgreesWithDecide walks a grid of requests, including unknown
// identities and tools, missing attributes and a rule that errors, and
// checks that the rule Explain says won is the one Decide chose.
func TestExplainAgreesWithDecide(t *testing.T) {
	policies := map[string]*policy.Policy{
		"shipped": explainDefault(t, ""),
		// A rule whose condition errors on a string attribute compared as a
		// number only when reached: currency is text, so < is an error.
		"with extra rules": explainDefault(t, "p, demo-agent, cancel_order, order_status == 'pending', allow\np, *, cancel_order, order_total > 1000.00, deny\n"),
	}
	agents := []string{"demo-agent", "senior-bot", "support_agent", "senior_agent", "nobody", ""}
	tools := append(policy.ToolNames(), "drop_tables")
	var attrSets []map[string]any
	for _, amount := range []float64{10, 50.01, 300, 2500} {
		for _, age := range []float64{2, 400} {
			for _, status := range []string{"pending", "shipped"} {
				for _, field := range []string{"email", "phone"} {
					attrSets = append(attrSets, explainAttrs(amount, 2500, age, status, field))
				}
			}
		}
	}
	attrSets = append(attrSets, map[string]any{}, map[string]any{"amount": "ten"})
	n := 0
	for name, p := range policies {
		for _, agent := range agents {
			for _, tool := range tools {
				for _, attrs := range attrSets {
					req := policy.Request{Agent: agent, Tool: tool, Attrs: attrs}
					dec := p.Decide(req)
					ex := p.Explain(req)
					n++
					var won *policy.Rule
					for _, r := range ex.Rules {
						if r.Won {
							if won != nil {
								t.Fatalf("%s %+v: two winners", name, req)
							}
							won = r.Rule
						}
					}
					if won != dec.Rule || ex.Decision.Effect != dec.Effect || strings.Contains(ex.Why, "differs") {
						t.Fatalf("%s %+v: Decide = %s by %s; Explain won %v, why %q", name, req, dec.Effect, dec.RuleText(), won, ex.Why)
					}
				}
			}
		}
	}
	if n < 1000 {
		t.Fatalf("only %d requests compared", n)
	}
}

// explainPolicy is a fixed policy, so line numbers in the expectations do
// not move when the shipped one is edited.
const explainPolicy = `p, *, refund_order, amount > order_refundable, deny
p, *, refund_order, customer_age_days < 7, require_approval
p, support_agent, refund_order, amount <= 50.00, allow
p, support_agent, refund_order, amount > 50.00 && amount <= 200.00, require_approval
p, support_agent, refund_order, amount > 200.00, deny
p, support_agent, update_account, field == 'phone', allow
p, senior_agent, refund_order, amount <= 500.00, allow
p, senior_agent, refund_order, amount > 500.00, require_approval
g, senior_agent, support_agent
g, demo-agent, support_agent
g, senior-bot, senior_agent
`

func TestExplain(t *testing.T) {
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "p.csv", Data: []byte(explainPolicy)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		req       policy.Request
		effect    string
		line      int      // winning rule's line; 0 for none
		why       string   // substring of Why
		inText    []string // substrings of String()
		matched   int
		notApplic int // rules that do not apply to the identity
	}{
		{"small refund", policy.Request{Agent: "demo-agent", Tool: "refund_order", Attrs: explainAttrs(30, 120, 400, "processing", "")},
			policy.Allow, 3, "only p.csv:3 matched", []string{"=> p.csv:3", "amount = 30", "order_status = 'processing'", "condition false"}, 1, 2},
		{"new customer: two require_approval rules, the first wins", policy.Request{Agent: "demo-agent", Tool: "refund_order", Attrs: explainAttrs(100, 120, 2, "processing", "")},
			policy.RequireApproval, 2, "p.csv:2 is the first match with the most restrictive effect among 2", []string{"=> p.csv:2"}, 2, 2},
		{"refund above refundable: deny wins and stops", policy.Request{Agent: "demo-agent", Tool: "refund_order", Attrs: explainAttrs(130, 120, 400, "processing", "")},
			policy.Deny, 1, "a matching deny always wins", []string{"not evaluated: a deny already matched"}, 1, 0},
		{"senior: own rules replace the inherited ones", policy.Request{Agent: "senior-bot", Tool: "refund_order", Attrs: explainAttrs(300, 2500, 400, "delivered", "")},
			policy.Allow, 7, "only p.csv:7", []string{"rules of: senior_agent, *", "senior-bot has support_agent, but the rules of senior_agent for refund_order replace those it inherits"}, 1, 3},
		{"nothing matches", policy.Request{Agent: "demo-agent", Tool: "update_account", Attrs: explainAttrs(0, 0, 400, "", "email")},
			policy.Deny, 0, "no rule that applies to demo-agent matched", []string{"condition false"}, 0, 0},
		{"a tool no rule mentions", policy.Request{Agent: "demo-agent", Tool: "cancel_order", Attrs: explainAttrs(0, 0, 400, "", "email")},
			policy.Deny, 0, "no rule mentions cancel_order", nil, 0, 0},
		{"unknown identity", policy.Request{Agent: "mallory", Tool: "refund_order", Attrs: explainAttrs(1, 120, 400, "processing", "")},
			policy.Deny, 0, "denied before any rule: unknown identity", nil, 0, 0},
		{"missing attribute is an error, so a deny", policy.Request{Agent: "demo-agent", Tool: "refund_order", Attrs: map[string]any{"amount": 5.0}},
			policy.Deny, 0, "could not be evaluated (p.csv:1", []string{"error: "}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := p.Explain(tt.req)
			if ex.Decision.Effect != tt.effect {
				t.Fatalf("effect = %s, want %s\n%s", ex.Decision.Effect, tt.effect, ex)
			}
			line := 0
			if ex.Decision.Rule != nil {
				line = ex.Decision.Rule.Line
			}
			if line != tt.line {
				t.Fatalf("winning line = %d, want %d\n%s", line, tt.line, ex)
			}
			if !strings.Contains(ex.Why, tt.why) {
				t.Fatalf("why = %q, want it to contain %q", ex.Why, tt.why)
			}
			text := ex.String()
			for _, s := range tt.inText {
				if !strings.Contains(text, s) {
					t.Fatalf("explanation lacks %q:\n%s", s, text)
				}
			}
			matched, notApplic := 0, 0
			for _, r := range ex.Rules {
				if r.Matched {
					matched++
				}
				if !r.Applies && !r.Skipped && r.Err == "" {
					notApplic++
				}
			}
			if matched != tt.matched || notApplic != tt.notApplic {
				t.Fatalf("matched %d, not applying %d; want %d, %d\n%s", matched, notApplic, tt.matched, tt.notApplic, text)
			}
		})
	}
}
