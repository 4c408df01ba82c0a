package policy_test

import (
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

func TestMoneyFindings(t *testing.T) {
	tests := []struct {
		cond string
		warn bool
	}{
		{"amount <= 50.00", true},
		{"amount > 50.00 && amount <= 200.00", true},
		{"agent_refunded_24h + amount > 500.00", true},
		{"50 >= order_total", true},
		{"amount_base <= 50.00", false},
		{"agent_refunded_24h + amount_base > 500.00", false},
		{"amount > order_refundable", false},
		{"amount > 0.5 * order_total", false},
		{"currency == 'JPY' && amount > 5000", false},
		{"order_total_base > 1000.00", false},
	}
	for _, tt := range tests {
		t.Run(tt.cond, func(t *testing.T) {
			text := "p, support_agent, refund_order, \"" + tt.cond + "\", allow\ng, demo-agent, support_agent\n"
			p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "p.csv", Data: []byte(text)})
			if err != nil {
				t.Fatal(err)
			}
			fs := policy.MoneyFindings(p)
			if got := len(fs) == 1; got != tt.warn {
				t.Fatalf("%q: findings %v, want a warning: %v", tt.cond, fs, tt.warn)
			}
			if tt.warn && (fs[0].Line != 1 || fs[0].Severity != policy.SevWarning) {
				t.Fatalf("finding %v, want a warning at line 1", fs[0])
			}
		})
	}
	shipped, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if fs := policy.MoneyFindings(shipped); len(fs) != 0 {
		t.Fatalf("the shipped policy writes a money limit in the order's currency: %v", fs)
	}
}
