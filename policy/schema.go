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
// units of the order's currency (50.00 means fifty dollars on a USD order).
const (
	AttrAmount          = "amount"            // refund_order: the requested refund
	AttrCurrency        = "currency"          // the order's currency, e.g. 'USD'
	AttrOrderTotal      = "order_total"       // what the customer paid
	AttrOrderRefunded   = "order_refunded"    // refunded so far
	AttrOrderRefundable = "order_refundable"  // order_total - order_refunded
	AttrOrderStatus     = "order_status"      // pending, processing, shipped, delivered, cancelled
	AttrCustomerAgeDays = "customer_age_days" // days since the customer's account was created
	AttrField           = "field"             // update_account: email, phone, shipping_address, name
)

// Tool describes one MCP tool as the policy sees it: whether it changes
// anything, and which attributes the guard supplies for its conditions.
type Tool struct {
	Action bool
	Attrs  []string
}

// Tools is the contract between the guard and the policy: every tool an
// agent can call, and the attributes its conditions may use. A rule naming
// a tool or an attribute not listed here is refused when the policy loads.
var Tools = map[string]Tool{
	"get_order":         {},
	"get_customer":      {},
	"find_customer":     {},
	"get_action_status": {},
	"refund_order": {Action: true, Attrs: []string{
		AttrAmount, AttrCurrency, AttrOrderTotal, AttrOrderRefunded, AttrOrderRefundable,
		AttrOrderStatus, AttrCustomerAgeDays,
	}},
	"cancel_order": {Action: true, Attrs: []string{
		AttrCurrency, AttrOrderTotal, AttrOrderRefunded, AttrOrderStatus, AttrCustomerAgeDays,
	}},
	"update_account": {Action: true, Attrs: []string{AttrField, AttrCustomerAgeDays}},
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
