package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

func TestLoadCasesRefuses(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"not yaml", "cases: [", "c.yaml: yaml:"},
		{"unknown key", "cases:\n  - agent: a\n    tool: get_order\n    attrs: {}\n    expct: allow\n", "field expct not found"},
		{"no cases", "store: demo\n", "c.yaml: no cases"},
		{"missing agent", "cases:\n  - tool: get_order\n    attrs: {}\n    expect: allow\n", "c.yaml:2: case 1: agent is required"},
		{"missing tool", "cases:\n  - agent: a\n    attrs: {}\n    expect: allow\n", "c.yaml:2: case 1: tool is required"},
		{"bad effect", "cases:\n  - name: typo\n    agent: a\n    tool: get_order\n    attrs: {}\n    expect: alow\n", `c.yaml:2: typo: expect must be allow, deny or require_approval, not "alow"`},
		{"neither attrs nor args", "cases:\n  - agent: a\n    tool: get_order\n    expect: allow\n", "give attrs (the attribute values) or args"},
		{"unknown tool", "cases:\n  - agent: a\n    tool: refund\n    attrs: {}\n    expect: allow\n", `c.yaml:2: case 1: unknown tool "refund"`},
		// A misspelt attribute leaves the one the rules test unset, and
		// a deny case would pass whatever they say.
		{"misspelt attribute", "cases:\n  - agent: a\n    tool: refund_order\n    attrs: {amout: 300, amount_base: 300}\n    expect: deny\n", `unknown attribute "amout": refund_order has amount, amount_base,`},
		{"attribute of a lookup", "cases:\n  - agent: a\n    tool: get_order\n    attrs: {amount: 3}\n    expect: allow\n", `unknown attribute "amount": get_order has none`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.LoadCases("c.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

const casesFile = `store: demo
cases:
  - name: small refund
    agent: demo-agent
    tool: refund_order
    attrs: {amount: 30, currency: USD, order_total: 120, order_refunded: 0, order_refundable: 120, order_status: processing, customer_age_days: 600}
    expect: allow
    rule: "amount <= 50.00"
  - name: wrongly expected
    agent: demo-agent
    tool: refund_order
    attrs: {amount: 300, currency: USD, order_total: 2500, order_refunded: 0, order_refundable: 2500, order_status: delivered, customer_age_days: 600}
    expect: allow
  - name: from the store
    agent: demo-agent
    tool: cancel_order
    args: {order_id: ord_1004, reason: asked}
    expect: allow
  - name: store fails
    agent: demo-agent
    tool: cancel_order
    args: {order_id: ord_404, reason: asked}
    expect: deny
  - name: store facts with an override
    agent: demo-agent
    tool: cancel_order
    args: {order_id: ord_1004, reason: asked}
    attrs: {order_status: shipped}
    expect: deny
  - name: right effect, wrong rule
    agent: demo-agent
    tool: get_order
    attrs: {}
    expect: allow
    rule: "senior_agent"
`

func TestRunCases(t *testing.T) {
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "p.csv", Data: []byte(explainPolicy + "p, support_agent, cancel_order, order_status == 'pending', allow\np, support_agent, get_order, true, allow\n")})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := policy.LoadCases("c.yaml", []byte(casesFile))
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	facts := func(tool string, args map[string]any) (map[string]any, error) {
		asked = append(asked, tool+" "+args["order_id"].(string))
		if args["order_id"] == "ord_1004" {
			return map[string]any{"order_status": "pending", "currency": "USD", "order_total": 45.0, "order_refunded": 0.0, "customer_age_days": 600.0}, nil
		}
		return nil, errors.New("not found")
	}
	results := policy.RunCases(p, cf.Cases, facts)
	tests := []struct {
		name, got string
		line      int
		pass      bool
		diff      []string
	}{
		{"small refund", policy.Allow, 3, true, nil},
		{"wrongly expected", policy.Deny, 9, false, []string{"FAIL c.yaml:9: wrongly expected", "- want: allow", "+ got:  deny by p.csv:5: p, support_agent, refund_order, amount > 200.00, deny", "amount=300 currency='USD'"}},
		{"from the store", policy.Allow, 14, true, nil},
		{"store fails", policy.Deny, 19, true, nil},
		{"store facts with an override", policy.Deny, 24, true, nil},
		{"right effect, wrong rule", policy.Allow, 30, false, []string{`- want: allow by a rule containing "senior_agent"`, "+ got:  allow by p.csv:13"}},
	}
	if len(results) != len(tests) {
		t.Fatalf("%d results, want %d", len(results), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := results[i]
			if r.Case.Name != tt.name || r.Case.Line != tt.line {
				t.Fatalf("case %q at line %d, want %q at %d", r.Case.Name, r.Case.Line, tt.name, tt.line)
			}
			if r.Got.Effect != tt.got || r.Pass != tt.pass {
				t.Fatalf("got %s pass=%v, want %s pass=%v (%s)", r.Got.Effect, r.Pass, tt.got, tt.pass, r.Got.RuleText())
			}
			diff := r.Diff("c.yaml")
			for _, s := range tt.diff {
				if !strings.Contains(diff, s) {
					t.Fatalf("diff lacks %q:\n%s", s, diff)
				}
			}
		})
	}
	if strings.Join(asked, ",") != "cancel_order ord_1004,cancel_order ord_404,cancel_order ord_1004" {
		t.Fatalf("facts asked for %v; cases with attrs must not read the store", asked)
	}
}

// TestPolicyErrorIsNoPass: a deny that came from a condition that could not
// be evaluated (an attribute the rules test is not given) passes a case
// only when the case names it (rule: "policy error"); otherwise a deny case
// would pass however the rules were loosened.
func TestPolicyErrorIsNoPass(t *testing.T) {
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "p.csv", Data: []byte(explainPolicy)})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := policy.LoadCases("c.yaml", []byte(`cases:
  - name: no amount
    agent: demo-agent
    tool: refund_order
    attrs: {amount_base: 300}
    expect: deny
  - name: no amount, expected
    agent: demo-agent
    tool: refund_order
    attrs: {amount_base: 300}
    expect: deny
    rule: policy error
`))
	if err != nil {
		t.Fatal(err)
	}
	results := policy.RunCases(p, cf.Cases, nil)
	if results[0].Got.Effect != policy.Deny || !results[0].Got.PolicyError() || results[0].Pass {
		t.Fatalf("a deny by a policy error passed (or was not one): %+v", results[0])
	}
	if d := results[0].Diff("c.yaml"); !strings.Contains(d, "a condition could not be evaluated") {
		t.Fatalf("the failure does not say why:\n%s", d)
	}
	if !results[1].Pass {
		t.Fatalf("a case expecting the policy error failed: %+v", results[1])
	}
}
