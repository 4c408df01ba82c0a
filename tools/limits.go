package tools

import (
	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
)

// scoped is implemented by the arguments of actions that limits over time
// count: whose account they touch and how much money, once load has read
// the facts. The money is in the base currency, so one agent's refunds in
// USD, EUR and KWD add up against one limit.
type scoped interface {
	scope() (customerID string, amountMinor int64, currency string)
}

// baseFacts adds to attrs the order's total in the base currency of t and
// which rate converted it (policy.FactRate and the rest), so the audit
// record says what every base amount was computed from. An order in a
// currency without a rate is a denied error: fail closed.
func baseFacts(t *rates.Table, attrs map[string]any, o backend.Order) error {
	total, rate, err := t.Convert(o.Total)
	if err != nil {
		return err
	}
	attrs[policy.AttrOrderTotalBase] = total.Major()
	attrs[policy.FactRate] = rate
	attrs[policy.FactRatesVersion] = t.Version
	attrs[policy.FactBaseCurrency] = t.Base
	return nil
}

// usageAttrs turns counted usage into the limit attributes of
// policy/schema.go; money is in major units of currency, the base currency
// the usage was counted in.
func usageAttrs(u storage.Usage, currency string) map[string]any {
	return map[string]any{
		policy.AttrAgentRefunded24h:     mandate.Money{Minor: u.AgentRefundedMinor24h, Currency: currency}.Major(),
		policy.AttrAgentRefunds24h:      float64(u.AgentRefunds24h),
		policy.AttrCustomerRefunds30d:   float64(u.CustomerRefunds30d),
		policy.AttrAgentCancellations1h: float64(u.AgentCancellations1h),
	}
}

func (a *refundArgs) scope() (string, int64, string) {
	return a.customerID, a.base.Minor, a.base.Currency
}

func (a *cancelArgs) scope() (string, int64, string) { return a.customerID, 0, a.currency }
