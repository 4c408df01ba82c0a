package policy_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/policy"
)

// benchTemplates are the rules each generated team gets: every one of the
// seven tools, all three effects, conditions of the shapes admins write.
// %[1]d varies by team so conditions differ and each is compiled.
var benchTemplates = []string{
	"get_order, true, allow",
	"get_customer, true, allow",
	"find_customer, true, allow",
	"get_action_status, true, allow",
	"refund_order, amount <= %[1]d.00, allow",
	"refund_order, amount > %[1]d.00 && amount <= %[1]d0.00, require_approval",
	"refund_order, amount > %[1]d0.00, deny",
	"refund_order, customer_age_days < %[1]d, require_approval",
	"refund_order, agent_refunded_24h + amount > %[1]d00.00, require_approval",
	"refund_order, currency == 'JPY' && amount > %[1]d000, deny",
	"cancel_order, order_status == 'pending' && order_total <= %[1]d.00, allow",
	"cancel_order, order_status == 'processing' && order_total <= %[1]d.00, allow",
	"cancel_order, order_status == 'shipped' || order_total > %[1]d0.00, deny",
	"cancel_order, agent_cancellations_1h >= %[1]d, deny",
	"cancel_order, customer_age_days < %[1]d, require_approval",
	"update_account, field == 'phone' || field == 'name', allow",
	"update_account, field == 'email' && customer_age_days > %[1]d, allow",
	"update_account, field == 'email' && customer_age_days <= %[1]d, require_approval",
	"update_account, field == 'shipping_address', allow",
	"update_account, field == 'password' || customer_age_days < 0.%[1]d, deny",
}

// benchPolicy is the shipped policy.csv followed by generated teams until
// it holds exactly n rules. Team NNNN inherits support_agent and has its
// own rules for every tool; identity agentNNNN is in team NNNN.
func benchPolicy(tb testing.TB, n int) policy.Source {
	tb.Helper()
	shipped, err := os.ReadFile("../policy.csv")
	if err != nil {
		tb.Fatal(err)
	}
	var b strings.Builder
	b.Write(shipped)
	rules := 0
	for _, l := range strings.Split(string(shipped), "\n") {
		if strings.HasPrefix(l, "p,") {
			rules++
		}
	}
	for team := 1; rules < n; team++ {
		fmt.Fprintf(&b, "\ng, team%04d, support_agent\ng, agent%04d, team%04d\n", team, team, team)
		for _, tmpl := range benchTemplates {
			if rules == n {
				break
			}
			fmt.Fprintf(&b, "p, team%04d, "+tmpl+"\n", team)
			rules++
		}
	}
	return policy.Source{Name: fmt.Sprintf("policy-%d.csv", n), Data: []byte(b.String())}
}

// benchRequest is a request and the effect it must get, so a benchmark
// cannot quietly measure a policy error.
type benchRequest struct {
	req  policy.Request
	want string
}

func benchShippedRequests(tb testing.TB) []benchRequest {
	return []benchRequest{
		{policy.Request{Agent: agentSupport, Tool: "refund_order", Attrs: refundFacts(tb, "30.00", "5000.00", 400)}, policy.Allow},
		{policy.Request{Agent: agentSupport, Tool: "refund_order", Attrs: refundFacts(tb, "120.00", "5000.00", 400)}, policy.RequireApproval},
		{policy.Request{Agent: agentSupport, Tool: "refund_order", Attrs: refundFacts(tb, "300.00", "5000.00", 400)}, policy.Deny},
		{policy.Request{Agent: agentSupport, Tool: "get_order", Attrs: map[string]any{}}, policy.Allow},
	}
}

// benchDecide decides reqs in turn, after checking each gets its effect.
func benchDecide(b *testing.B, p *policy.Policy, reqs []benchRequest) {
	for _, r := range reqs {
		if d := p.Decide(r.req); d.Effect != r.want {
			b.Fatalf("%s %s: %s (%s), want %s", r.req.Agent, r.req.Tool, d.Effect, d.RuleText(), r.want)
		}
	}
	var last policy.Decision
	for i := 0; b.Loop(); i++ {
		last = p.Decide(reqs[i%len(reqs)].req)
	}
	if last.Effect == "" {
		b.Fatal("no decision")
	}
}

// BenchmarkDecide is one decision with the shipped policy: a small refund
// allowed, one needing approval, one denied, a lookup.
func BenchmarkDecide(b *testing.B) {
	benchDecide(b, shippedLoad(b), benchShippedRequests(b))
}

// BenchmarkDecideLarge is one decision with the shipped rules plus
// generated teams: the shipped mix, and a generated agent's refund.
func BenchmarkDecideLarge(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p, err := policy.Load(shippedSource(b, "model.conf"), benchPolicy(b, n))
			if err != nil {
				b.Fatal(err)
			}
			reqs := append(benchShippedRequests(b), benchRequest{
				policy.Request{Agent: "agent0007", Tool: "refund_order", Attrs: refundFacts(b, "60.00", "5000.00", 400)},
				policy.RequireApproval, // team0007: above 7.00, up to 70.00
			})
			benchDecide(b, p, reqs)
		})
	}
}

// BenchmarkLoad10k loads the shipped rules plus generated teams, 10,000
// rules in all.
func BenchmarkLoad10k(b *testing.B) {
	model, pol := shippedSource(b, "model.conf"), benchPolicy(b, 10000)
	for b.Loop() {
		if _, err := policy.Load(model, pol); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBenchPolicy checks the generator the benchmarks rely on: exactly n
// rules, a policy that loads, and the shipped identities deciding as they
// do under the shipped policy alone.
func TestBenchPolicy(t *testing.T) {
	const n = 500
	src := benchPolicy(t, n)
	p, err := policy.Load(shippedSource(t, "model.conf"), src)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != n {
		t.Fatalf("%d rules, want %d", len(p.Rules), n)
	}
	for _, r := range benchShippedRequests(t) {
		if d := p.Decide(r.req); d.Effect != r.want {
			t.Fatalf("%s %s: %s (%s), want %s", r.req.Agent, r.req.Tool, d.Effect, d.RuleText(), r.want)
		}
	}
	d := p.Decide(policy.Request{Agent: "agent0007", Tool: "refund_order", Attrs: refundFacts(t, "60.00", "5000.00", 400)})
	if want := "p, team0007, refund_order, amount > 7.00 && amount <= 70.00, require_approval"; d.Rule == nil || !strings.HasSuffix(d.Rule.String(), want) {
		t.Fatalf("agent0007 refund of 60.00: %s, want %s", d.RuleText(), want)
	}
}
