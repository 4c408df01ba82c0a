package policy

import "sort"

// Effects a rule may have, from least to most restrictive.
const (
	Allow           = "allow"
	RequireApproval = "require_approval"
	Deny            = "deny"
)

// restrictiveness orders effects: the highest matching one wins.
var restrictiveness = map[string]int{Allow: 1, RequireApproval: 2, Deny: 3}

// Attribute names that conditions may test. Money attributes are in major
// units: amount, order_total, order_refunded and order_refundable in the
// order's own currency (50.00 is fifty dollars on a USD order, fifty dinars
// on a KWD one), for comparing with each other; amount_base,
// order_total_base and agent_refunded_24h in the operator's base currency
// (rates.csv), converted exactly and rounded up, for limits, so a limit
// means the same in every currency.
const (
	AttrAmount          = "amount"            // refund_order: the requested refund, in the order's currency
	AttrAmountBase      = "amount_base"       // refund_order: the requested refund, in the base currency
	AttrCurrency        = "currency"          // the order's currency, e.g. 'USD'
	AttrOrderTotal      = "order_total"       // what the customer paid, in the order's currency
	AttrOrderTotalBase  = "order_total_base"  // what the customer paid, in the base currency
	AttrOrderRefunded   = "order_refunded"    // refunded so far
	AttrOrderRefundable = "order_refundable"  // order_total - order_refunded
	AttrOrderStatus     = "order_status"      // pending, processing, shipped, delivered, cancelled
	AttrCustomerAgeDays = "customer_age_days" // days since the customer's account was created
	AttrField           = "field"             // update_account: email, phone, shipping_address, name

	// Limits over time: what was already allowed in a rolling window,
	// counted in Mandate's database in the same transaction that records
	// the attempt, so racing calls cannot all squeeze under a limit.
	AttrAgentRefunded24h     = "agent_refunded_24h"     // refunds this agent made in the last 24 h, in every currency, summed in the base currency
	AttrAgentRefunds24h      = "agent_refunds_24h"      // how many refunds this agent made in the last 24 h
	AttrCustomerRefunds30d   = "customer_refunds_30d"   // how many refunds this customer got in the last 30 days
	AttrAgentCancellations1h = "agent_cancellations_1h" // how many orders this agent cancelled in the last hour
)

// Recorded with the facts of every refund and cancellation, but not for
// conditions: which rates converted the money, so an audit reader, explain
// and replay see exactly what a base-currency amount was computed from.
const (
	FactRate         = "rate"          // units of the base currency per unit of the order's currency, as written in rates.csv, e.g. '1.0842'
	FactRatesVersion = "rates_version" // the version of the rates file that converted
	FactBaseCurrency = "base_currency" // the base currency, e.g. 'USD'
)

// Tool describes one MCP tool as the policy sees it: whether it changes
// anything, and which attributes the guard supplies for its conditions.
// An Approval tool is no MCP tool: it names a person's approving of an
// action ("approve_refund_order"), decided for the approver with the
// action's attributes.
//
// An Admin tool is no MCP tool either: it names a person's administrative
// act (suspending an agent, reverting an agent's change), decided for that
// person. It is neither an action nor an approval, so a rule granting it
// makes nobody an agent or an approver (auth.RoleOf).
type Tool struct {
	Action   bool
	Approval bool
	Admin    bool
	Attrs    []string
}

// Tools is the contract between the guard and the policy: every tool an
// agent can call, and the attributes its conditions may use. A rule naming
// a tool or an attribute not listed here is refused when the policy loads.
var Tools = map[string]Tool{
	"get_order":         {},
	"get_customer":      {},
	"find_customer":     {},
	"get_action_status": {},
	"refund_order":      {Action: true, Attrs: refundAttrs},
	"cancel_order":      {Action: true, Attrs: cancelAttrs},
	"update_account":    {Action: true, Attrs: updateAttrs},

	ApprovalPrefix + "refund_order":   {Approval: true, Attrs: refundAttrs},
	ApprovalPrefix + "cancel_order":   {Approval: true, Attrs: cancelAttrs},
	ApprovalPrefix + "update_account": {Approval: true, Attrs: updateAttrs},

	// The kill switch and remediation (issue 13). revert_update_account
	// decides whether a person may put back a value an agent's
	// update_account changed; the revert is then an update_account action
	// by that person, recorded and executed by the guard like any other.
	"suspend_agent":         {Admin: true},
	"resume_agent":          {Admin: true},
	"revert_update_account": {Admin: true, Attrs: updateAttrs},
}

// ApprovalPrefix names the approval pseudo-tool of an action:
// "approve_" + "refund_order".
const ApprovalPrefix = "approve_"

var (
	refundAttrs = []string{
		AttrAmount, AttrAmountBase, AttrCurrency, AttrOrderTotal, AttrOrderTotalBase, AttrOrderRefunded, AttrOrderRefundable,
		AttrOrderStatus, AttrCustomerAgeDays,
		AttrAgentRefunded24h, AttrAgentRefunds24h, AttrCustomerRefunds30d,
	}
	cancelAttrs = []string{AttrCurrency, AttrOrderTotal, AttrOrderTotalBase, AttrOrderRefunded, AttrOrderStatus, AttrCustomerAgeDays, AttrAgentCancellations1h}
	updateAttrs = []string{AttrField, AttrCustomerAgeDays}
)

// MCPToolNames returns the names of the tools agents call, sorted: Tools
// without the approval and admin pseudo-tools.
func MCPToolNames() []string {
	var names []string
	for _, n := range ToolNames() {
		if !Tools[n].Approval && !Tools[n].Admin {
			names = append(names, n)
		}
	}
	return names
}

// ToolNames returns the names in Tools, sorted.
func ToolNames() []string {
	names := make([]string, 0, len(Tools))
	for n := range Tools {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// AttrValues lists, for each text attribute, every value a fact can take:
// the order statuses and updatable fields of package backend and the
// currencies Mandate accepts (mandate.CurrencyExponent). `policy check`
// warns on a condition that compares an attribute with any other value
// ("order_status == 'shipped '" never holds), and probes conditions with
// these values. A test keeps the lists equal to their sources.
var AttrValues = map[string][]string{
	AttrOrderStatus: {"pending", "processing", "shipped", "delivered", "cancelled"},
	AttrField:       {"email", "phone", "shipping_address", "name"},
	AttrCurrency: {
		"AUD", "BHD", "BRL", "CAD", "CHF", "CLP", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "INR", "ISK",
		"JOD", "JPY", "KRW", "KWD", "MXN", "NOK", "NZD", "OMR", "PLN", "SEK", "SGD", "TND", "USD", "ZAR",
	},
}
