package policy_test

import (
	"os"
	"strings"
	"testing"
)

// TestOfferedHidesAlwaysDenied: a deny that always holds hides the tool from
// everyone it applies to, whatever grants it (the most restrictive rule
// wins), and so does a grant that never holds; a deny whose condition may
// or may not hold hides nothing.
func TestOfferedHidesAlwaysDenied(t *testing.T) {
	shipped, err := os.ReadFile("../policy.csv")
	if err != nil {
		t.Fatal(err)
	}
	extra := `
p, *, find_customer, true, deny
p, *, refund_order, amount > 1000000.00, deny
p, support_agent, cancel_order, 1 == 1, deny
p, quiet, get_order, false, allow
p, quiet, get_customer, true, allow
p, quiet, get_customer, true, deny, acme
g, quiet-bot, quiet
g, acme-quiet, quiet, acme
`
	p, err := loadTenants(t, string(shipped)+extra)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		agent, tool string
		want        bool
	}{
		{"demo-agent", "find_customer", false}, // p, *, …, true, deny
		{"demo-agent", "cancel_order", false},  // a constant condition that holds
		{"demo-agent", "refund_order", true},   // a deny that may not hold hides nothing
		{"demo-agent", "get_order", true},
		{"quiet-bot", "get_order", false}, // a grant that never holds
		{"quiet-bot", "get_customer", true},
		{"acme-quiet", "get_customer", false}, // the tenant's own deny
		{"quiet-bot", "find_customer", false},
	} {
		if got := p.Offered(c.agent, c.tool); got != c.want {
			t.Errorf("Offered(%s, %s) = %v, want %v", c.agent, c.tool, got, c.want)
		}
	}
	// The guard still reads the facts of a tool some rule grants, so an
	// emergency deny's refusal names its rule rather than failing on a
	// condition's missing attribute.
	if !p.CanEverUse("demo-agent", "find_customer") {
		t.Error("CanEverUse(demo-agent, find_customer) = false; the guard would skip its facts")
	}
	if !strings.Contains(string(shipped), "support_agent, find_customer, true, allow") {
		t.Fatal("the shipped policy no longer grants find_customer: the test proves nothing")
	}
}
