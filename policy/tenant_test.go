package policy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/policy"
)

const tenantPolicy = `
p, support_agent, refund_order, amount <= 50.00, allow
p, support_agent, refund_order, amount > 20.00, require_approval, acme
p, support_agent, get_order, true, allow
p, *, get_customer, true, allow, beta
p, beta_lead, cancel_order, true, allow, beta
g, demo-agent, support_agent
g, acme-bot, support_agent, acme
g, beta-bot, support_agent, beta
g, beta-boss, beta_lead, beta
`

func loadTenants(t *testing.T, text string) (*policy.Policy, error) {
	t.Helper()
	model, err := os.ReadFile("../model.conf")
	if err != nil {
		t.Fatal(err)
	}
	return policy.Load(policy.Source{Name: "model.conf", Data: model}, policy.Source{Name: "p.csv", Data: []byte(text)})
}

// TestTenants: rules and grants can hold in one tenant or everywhere; an
// identity granted a role in a tenant belongs to it and sees the rules for
// everywhere plus its tenant's.
func TestTenants(t *testing.T) {
	p, err := loadTenants(t, tenantPolicy)
	if err != nil {
		t.Fatal(err)
	}
	refund := func(amount float64) map[string]any {
		return map[string]any{"amount": amount, "currency": "USD", "order_total": 100.0, "order_refunded": 0.0,
			"order_refundable": 100.0, "order_status": "delivered", "customer_age_days": 400.0,
			"agent_refunded_24h": 0.0, "agent_refunds_24h": 0.0, "customer_refunds_30d": 0.0}
	}
	cases := []struct {
		agent, tool string
		attrs       map[string]any
		want        string
		ruleHas     string
	}{
		{"demo-agent", "refund_order", refund(30), policy.Allow, "amount <= 50.00, allow"},
		{"acme-bot", "refund_order", refund(30), policy.RequireApproval, "require_approval, acme"},
		{"acme-bot", "refund_order", refund(10), policy.Allow, "amount <= 50.00, allow"},
		{"beta-bot", "refund_order", refund(30), policy.Allow, "amount <= 50.00, allow"},
		{"beta-bot", "get_customer", nil, policy.Allow, "get_customer, true, allow, beta"},
		{"acme-bot", "get_customer", nil, policy.Deny, ""},
		{"demo-agent", "get_customer", nil, policy.Deny, ""},
		{"beta-boss", "cancel_order", map[string]any{"order_status": "pending"}, policy.Allow, "beta_lead, cancel_order"},
	}
	for _, c := range cases {
		t.Run(c.agent+" "+c.tool, func(t *testing.T) {
			d := p.Decide(policy.Request{Agent: c.agent, Tool: c.tool, Attrs: c.attrs})
			if d.Effect != c.want {
				t.Fatalf("effect %s (%s), want %s", d.Effect, d.RuleText(), c.want)
			}
			if c.ruleHas != "" && (d.Rule == nil || !strings.Contains(d.Rule.String(), c.ruleHas)) {
				t.Fatalf("rule %q does not contain %q", d.RuleText(), c.ruleHas)
			}
			ex := p.Explain(policy.Request{Agent: c.agent, Tool: c.tool, Attrs: c.attrs})
			var won *policy.Rule
			for _, r := range ex.Rules {
				if r.Won {
					won = r.Rule
				}
			}
			if (won == nil) != (d.Rule == nil) || (won != nil && won.Line != d.Rule.Line) {
				t.Fatalf("Explain's winner %v differs from Decide's %v", won, d.Rule)
			}
			if got := p.CanEverUse(c.agent, c.tool); got != (c.want != policy.Deny) {
				t.Fatalf("CanEverUse = %v", got)
			}
		})
	}
	if got := p.TenantOf("acme-bot"); got != "acme" {
		t.Fatalf("TenantOf(acme-bot) = %q", got)
	}
	if got := p.TenantOf("demo-agent"); got != "" {
		t.Fatalf("TenantOf(demo-agent) = %q", got)
	}
}

func TestTenantMistakesAreRefused(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"identity in two tenants", "p, r, get_order, true, allow\ng, bot, r, acme\ng, bot, r, beta\n",
			`p.csv:3: "bot" is granted roles in tenant "beta" here and in tenant "acme" on line 2`},
		{"bad tenant name", "p, r, get_order, true, allow, ac me\ng, bot, r\n", `p.csv:1: tenant "ac me"`},
		{"a comment after a rule's tenant", "p, r, get_order, true, allow, acme   # acme only\ng, bot, r\n",
			`p.csv:1: text after the tenant "acme": a # comment must be on its own line`},
		{"a comment after a grant's tenant", "p, r, get_order, true, allow\ng, bot, r, acme # acme-bot\n",
			`p.csv:2: text after the tenant "acme": a # comment must be on its own line`},
		{"unquoted comma still caught", "p, r, cancel_order, order_status IN ('pending', 'processing'), allow\ng, bot, r\n",
			"p.csv:1: a rule has 5 fields"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadTenants(t, c.text)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestTenantsExampleLoads: the example in docs/policy.md's Tenants section
// loads (it once ended its lines in # comments, which Load refuses).
func TestTenantsExampleLoads(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## Tenants\n.*?\n```\n(.*?)```\n").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/policy.md has no Tenants example")
	}
	p, err := loadTenants(t, string(m[1]))
	if err != nil {
		t.Fatalf("the Tenants example does not load: %v\n%s", err, m[1])
	}
	if got := p.TenantOf("acme-bot"); got != "acme" {
		t.Fatalf("TenantOf(acme-bot) = %q, want acme", got)
	}
}
