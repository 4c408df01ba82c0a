package policy_test

import (
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

func checkRun(policyText string) (*policy.Policy, []policy.Finding) {
	return policy.Check(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "p.csv", Data: []byte(policyText)})
}

func TestCheckShippedPolicyHasNoErrorsOrWarnings(t *testing.T) {
	p, findings := policy.Check(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if p == nil {
		t.Fatalf("the shipped policy does not load: %v", findings)
	}
	for _, f := range findings {
		if f.Severity != policy.SevNote {
			t.Errorf("%s", f)
		}
	}
}

func TestCheck(t *testing.T) {
	const base = "p, support_agent, get_order, true, allow\ng, demo-agent, support_agent\n"
	tests := []struct {
		name   string
		policy string
		want   []string // each must be one finding's String(), as a substring
		loads  bool
	}{
		{"clean", base, nil, true},
		{"load error becomes an error finding", base + "p, support_agent, refund_order, true, alow\n",
			[]string{`p.csv:3: error: unknown effect "alow"`}, false},
		{"role chain too deep is located at a grant line", base + "g, r0, r1\ng, r1, r2\ng, r2, r3\ng, r3, r4\ng, r4, r5\ng, r5, r6\ng, r6, r7\ng, r7, r8\ng, r8, r9\ng, r9, r10\ng, r10, r11\ng, r11, r12\np, r12, get_order, true, allow\n",
			[]string{`p.csv:3: error: the role chain from "r0" is 12 links deep; the limit is 10`}, false},
		{"role cycle", base + "g, a, b\ng, b, a\ng, x, b\np, a, get_order, true, allow\n",
			[]string{"p.csv:3: error: role cycle: a → b → a"}, false},
		{"subject in no g line", base + "p, suport_agent, get_customer, true, allow\n",
			[]string{`p.csv:3: warning: "suport_agent" has rules but is in no g line`}, true},
		{"identity granted a role with no rules", base + "g, new-bot, suport_agent\n",
			[]string{`p.csv:3: warning: identity "new-bot" reaches no rules`, `p.csv:3: warning: role "suport_agent" reaches no rules`}, true},
		{"contradictory condition never matches", base + "p, support_agent, refund_order, amount > 10 && amount < 5, allow\n",
			[]string{`p.csv:3: warning: condition "amount > 10 && amount < 5" is false for every value probed`}, true},
		{"text condition that cannot hold", base + "p, support_agent, cancel_order, order_status == 'pending' && order_status == 'shipped', allow\n",
			[]string{`p.csv:3: warning: condition "order_status == 'pending' && order_status == 'shipped'" is false`}, true},
		{"same condition, more restrictive effect", base + "p, support_agent, refund_order, amount < 50, allow\np, support_agent, refund_order, amount < 50, require_approval\n",
			[]string{"p.csv:3: warning: always overridden by line 4 (p, support_agent, refund_order, amount < 50, require_approval)"}, true},
		{"a deny for everyone with condition true", base + "p, support_agent, cancel_order, order_status == 'pending', allow\np, *, cancel_order, true, deny\n",
			[]string{"p.csv:3: warning: always overridden by line 4 (p, *, cancel_order, true, deny)"}, true},
		{"a wider deny for everyone", base + "p, support_agent, refund_order, amount > 300.00, allow\np, *, refund_order, amount > 200.00, deny\n",
			[]string{"p.csv:3: warning: always overridden by line 4"}, true},
		{"role rule replaced for every holder", base + "p, support_agent, refund_order, true, allow\np, demo-agent, refund_order, amount < 5, allow\n",
			[]string{"p.csv:3: warning: applies to no identity: every holder of support_agent has nearer rules for refund_order"}, true},
		{"role rule replaced for a member role is a note", base + "g, senior_agent, support_agent\ng, bot, senior_agent\np, support_agent, refund_order, amount < 50, allow\np, senior_agent, refund_order, amount < 500, allow\n",
			[]string{"p.csv:5: note: does not apply to senior_agent (granted support_agent on line 3) or its members: senior_agent's own refund_order rules, from line 6, replace it"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, findings := checkRun(tt.policy)
			if (p != nil) != tt.loads {
				t.Fatalf("loaded = %v, want %v; findings %v", p != nil, tt.loads, findings)
			}
			var got []string
			for _, f := range findings {
				got = append(got, f.String())
			}
			all := strings.Join(got, "\n")
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Fatalf("findings lack %q; got:\n%s", w, all)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d findings, want %d:\n%s", len(got), len(tt.want), all)
			}
		})
	}
}

// TestCheckOverrideIsNotFlaggedWhenSomeValueEscapes guards against a probe
// grid that misses the gap between two conditions.
func TestCheckOverrideIsNotFlaggedWhenSomeValueEscapes(t *testing.T) {
	_, findings := checkRun("p, support_agent, refund_order, amount > 200.00, allow\np, *, refund_order, amount > 200.01, deny\ng, demo-agent, support_agent\n")
	for _, f := range findings {
		if strings.Contains(f.Message, "overridden") {
			t.Fatalf("flagged although 200.005 escapes the deny: %s", f)
		}
	}
}
