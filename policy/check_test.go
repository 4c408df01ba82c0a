package policy_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
)

func checkRun(policyText string) (*policy.Policy, []policy.Finding) {
	p, findings, err := policy.Check(context.Background(), policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "p.csv", Data: []byte(policyText)})
	if err != nil {
		panic(err) // only a done context makes Check fail
	}
	return p, findings
}

func TestCheckShippedPolicyHasNoErrorsOrWarnings(t *testing.T) {
	p, findings, err := policy.Check(context.Background(), policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
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
		// Rules of two tenants never meet: the allow of acme is not
		// overridden by beta's deny, and the role reaches both tenants' rules.
		{"rules of other tenants do not override", "p, support_agent, refund_order, amount_base <= 50.00, allow, acme\np, support_agent, refund_order, amount_base <= 100.00, deny, beta\ng, bot-a, support_agent, acme\ng, bot-b, support_agent, beta\n",
			nil, true},
		{"a rule of every tenant does override", "p, support_agent, refund_order, amount_base <= 50.00, allow, acme\np, support_agent, refund_order, amount_base <= 100.00, deny\ng, bot-a, support_agent, acme\n",
			[]string{`p.csv:1: warning: always overridden by line 2 (p, support_agent, refund_order, amount_base <= 100.00, deny)`}, true},
		{"a rule of the same tenant overrides, named with its tenant", "p, support_agent, refund_order, amount_base <= 50.00, allow, acme\np, support_agent, refund_order, amount_base <= 100.00, deny, acme\ng, bot-a, support_agent, acme\n",
			[]string{`p.csv:1: warning: always overridden by line 2 (p, support_agent, refund_order, amount_base <= 100.00, deny, acme)`}, true},
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
		{"a catch-all allow of an action tool", base + "p, *, refund_order, true, allow\ng, alice, supervisor\np, supervisor, approve_refund_order, true, allow\n",
			[]string{"p.csv:3: warning: every identity, approvers included (approvers here: alice), may use refund_order without any condition"}, true},
		{"a conditional allow for * of an action tool", base + "p, *, cancel_order, order_status == 'pending', allow\n",
			[]string{"p.csv:3: warning: every identity, approvers included, may use cancel_order whenever order_status == 'pending' holds"}, true},
		{"an allow for * of an approval", base + "p, *, approve_refund_order, true, allow\n",
			[]string{"p.csv:3: warning: every identity, every agent included, may approve refund order without any condition"}, true},
		// auditor has no rules by design (auth gives it its meaning): a
		// note for the role, nothing for its members, nothing to fail --strict.
		{"an auditor", base + "g, carol, auditor\n",
			[]string{`p.csv:3: note: role "auditor" has no rules, by design`}, true},
		{"a role of auditors", base + "g, audit_team, auditor\ng, dave, audit_team\n",
			[]string{`p.csv:3: note: role "auditor" has no rules, by design`}, true},
		{"a typo of auditor still warns", base + "g, carol, auditr\n",
			[]string{`p.csv:3: warning: identity "carol" reaches no rules`, `p.csv:3: warning: role "auditr" reaches no rules`}, true},
		{"a lookalike identity with U+2010", base + "g, demo\u2010agent, support_agent\n",
			[]string{`p.csv:3: warning: identity "demo‐agent": the name holds '‐' (U+2010), which looks like "-"; it looks like identity "demo-agent" (line 2)`}, true},
		{"a lookalike role in Cyrillic", base + "g, new-bot, suppоrt_agent\np, suppоrt_agent, get_customer, true, allow\n",
			[]string{`p.csv:3: warning: role "suppоrt_agent": the name holds 'о' (U+043E), which looks like "o"; it looks like role "support_agent" (line 1)`}, true},
		{"a name that differs by case only", base + "g, Demo-Agent, support_agent\n",
			[]string{`p.csv:3: warning: identity "Demo-Agent": it looks like identity "demo-agent" (line 2)`}, true},
		{"an invisible character in a name", base + "g, demo\u200bbot, support_agent\n",
			[]string{`p.csv:3: warning: identity "demo⟨U+200B⟩bot": the name holds an invisible or control character (⟨U+200B⟩)`}, true},
		{"a status no order has", base + "p, support_agent, cancel_order, order_status == 'shipped ', deny\np, support_agent, cancel_order, true, allow\n",
			[]string{`p.csv:3: warning: condition "order_status == 'shipped '" compares order_status with 'shipped ', a value it never takes (did you mean 'shipped'?)`}, true},
		{"a currency in lower case, and a field no update has, in a list", base + "p, support_agent, refund_order, currency != 'usd', deny\np, support_agent, update_account, \"field in ('email', 'password')\", deny\np, support_agent, refund_order, true, allow\np, support_agent, update_account, true, allow\n",
			[]string{`p.csv:3: warning: condition "currency != 'usd'" compares currency with 'usd', a value it never takes (did you mean 'USD'?)`,
				`p.csv:4: warning: condition "field in ('email', 'password')" compares field with 'password', a value it never takes (field is one of email, phone, shipping_address, name)`}, true},
		{"an identity that is agent and approver", base + "p, support_agent, refund_order, amount <= 50.00, allow\np, supervisor, approve_refund_order, true, allow\ng, alice, supervisor\ng, demo-agent, supervisor\n",
			[]string{`p.csv:2: warning: identity "demo-agent" holds both an agent's and an approver's rights: it may use refund_order (through support_agent) and approve_refund_order (through supervisor)`}, true},
		{"an approver with no action rights is fine", base + "p, supervisor, approve_refund_order, true, allow\ng, alice, supervisor\n", nil, true},
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

// TestCheckStopsWhenCancelled: `policy check` on SIGINT or SIGTERM cancels
// its context; Check and Lint give up with the context's error.
func TestCheckStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	model := policy.Source{Name: "model.conf", Data: mandate.DefaultModel}
	p, findings, err := policy.Check(ctx, model, benchPolicy(t, 2000))
	if !errors.Is(err, context.Canceled) || p != nil || findings != nil {
		t.Fatalf("Check with a cancelled context: %v, %d findings, err %v; want context.Canceled", p != nil, len(findings), err)
	}
	loaded, err := policy.Load(model, benchPolicy(t, 2000))
	if err != nil {
		t.Fatal(err)
	}
	if findings, err := loaded.Lint(ctx); !errors.Is(err, context.Canceled) || findings != nil {
		t.Fatalf("Lint with a cancelled context: %d findings, err %v; want context.Canceled", len(findings), err)
	}
}

// TestAttrValuesMatchTheirSources keeps the enumerations the linter uses
// equal to the values facts take.
func TestAttrValuesMatchTheirSources(t *testing.T) {
	if got := policy.AttrValues[policy.AttrOrderStatus]; !slices.Equal(got, backend.Statuses) {
		t.Fatalf("order_status values %v, backend.Statuses %v", got, backend.Statuses)
	}
	if got := policy.AttrValues[policy.AttrField]; !slices.Equal(got, backend.UpdatableFields) {
		t.Fatalf("field values %v, backend.UpdatableFields %v", got, backend.UpdatableFields)
	}
	var known []string
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			for c := 'A'; c <= 'Z'; c++ {
				if code := string([]rune{a, b, c}); func() bool { _, ok := mandate.CurrencyExponent(code); return ok }() {
					known = append(known, code)
				}
			}
		}
	}
	if got := policy.AttrValues[policy.AttrCurrency]; !slices.Equal(got, known) {
		t.Fatalf("currency values %v, the currencies mandate accepts %v", got, known)
	}
}
