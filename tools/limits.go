package tools

import (
	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// scoped is implemented by the arguments of actions that limits over time
// count: whose account they touch and how much money, once load has read
// the facts.
type scoped interface {
	scope() (customerID string, amountMinor int64, currency string)
}

// usageAttrs turns counted usage into the limit attributes of
// policy/schema.go; money is in major units of currency, like every other
// money attribute.
func usageAttrs(u storage.Usage, currency string) map[string]any {
	return map[string]any{
		policy.AttrAgentRefunded24h:     mandate.Money{Minor: u.AgentRefundedMinor24h, Currency: currency}.Major(),
		policy.AttrAgentRefunds24h:      float64(u.AgentRefunds24h),
		policy.AttrCustomerRefunds30d:   float64(u.CustomerRefunds30d),
		policy.AttrAgentCancellations1h: float64(u.AgentCancellations1h),
	}
}

func (a *refundArgs) scope() (string, int64, string) {
	return a.customerID, a.amount.Minor, a.amount.Currency
}

func (a *cancelArgs) scope() (string, int64, string) { return a.customerID, 0, a.currency }
