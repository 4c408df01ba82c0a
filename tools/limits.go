package tools

import (
	"fmt"

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

// StaleRatesReason begins the reason of an action refused because the
// server converted its money with exchange rates that are not the live
// ones; like StalePolicyReason, `policy replay` skips such records.
const StaleRatesReason = "not the live exchange rates"

// convertedWith is the version of the rates that converted facts into the
// base currency (baseFacts), "" when nothing was converted.
func convertedWith(facts map[string]any) string {
	v, _ := facts[policy.FactRatesVersion].(string)
	return v
}

// staleRatesReason says why an action was refused with exchange rates that
// are not the live ones. The guard checks them in the transaction that
// records the attempt (storage.Usage.LiveRates), as it checks the policy:
// two servers with different rates files must not judge the same refund
// against a limit on different base amounts. Every deciding process
// records the rates it loads, so a correct deployment refuses only for the
// moment between one server's reload and the others'.
func staleRatesReason(held, live string) string {
	if live == "" {
		return fmt.Sprintf("%s: exchange rates version %s are not recorded as live in the database (no server recorded any), so no money is converted with them", StaleRatesReason, held)
	}
	return fmt.Sprintf("%s: this server converted with exchange rates version %s but the live rates are %s; it must load the same rates file as the process that recorded them", StaleRatesReason, held, live)
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
