package tools

import (
	"time"

	"github.com/mandatehq/mandate/backend"
	"github.com/mark3labs/mcp-go/mcp"
)

// OrderView is an order as agents see it. Money is a decimal string in the
// order's currency ("30.00"), never a float.
type OrderView struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Status     string    `json:"status" jsonschema:"enum=pending,enum=processing,enum=shipped,enum=delivered,enum=cancelled"`
	Currency   string    `json:"currency"`
	Total      string    `json:"total"`
	Refunded   string    `json:"refunded"`
	Refundable string    `json:"refundable"`
	CreatedAt  time.Time `json:"created_at"`
}

// shownCustomer: an order shows whose it is, and what they paid.
func (v OrderView) shownCustomer() string { return v.CustomerID }

func orderView(o backend.Order) OrderView {
	return OrderView{
		ID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Currency: o.Total.Currency,
		Total: o.Total.String(), Refunded: o.Refunded.String(), Refundable: o.Refundable().String(),
		CreatedAt: o.CreatedAt,
	}
}

// CustomerView is a customer account as agents see it.
type CustomerView struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Email           string    `json:"email"`
	Phone           string    `json:"phone"`
	ShippingAddress string    `json:"shipping_address"`
	CreatedAt       time.Time `json:"created_at"`
}

func (v CustomerView) shownCustomer() string { return v.ID }

func customerView(c backend.Customer) CustomerView {
	return CustomerView{ID: c.ID, Name: c.Name, Email: c.Email, Phone: c.Phone, ShippingAddress: c.ShippingAddress, CreatedAt: c.CreatedAt}
}

// RefundView is a refund that was made.
type RefundView struct {
	RefundID string    `json:"refund_id"`
	OrderID  string    `json:"order_id"`
	Amount   string    `json:"amount"`
	Currency string    `json:"currency"`
	Created  time.Time `json:"created_at"`
}

// readHints are the annotations of a lookup: it changes nothing, repeating
// it is harmless, and it reads only the operator's own systems.
func readHints() []mcp.ToolOption {
	return []mcp.ToolOption{
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	}
}

// actionHints are the annotations of an action: it changes a system of
// record outside Mandate and cannot be undone by calling it again.
func actionHints() []mcp.ToolOption {
	return []mcp.ToolOption{
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(false),
		mcp.WithOpenWorldHintAnnotation(true),
	}
}

func options(base []mcp.ToolOption, more ...mcp.ToolOption) []mcp.ToolOption {
	return append(more, base...)
}

// ageDays is how old an account is, in days, for customer_age_days.
func ageDays(now, created time.Time) float64 { return now.Sub(created).Hours() / 24 }

// orderFacts are the attributes every order action shares.
func orderFacts(now time.Time, o backend.Order, c backend.Customer) map[string]any {
	return map[string]any{
		"currency":          o.Total.Currency,
		"order_total":       o.Total.Major(),
		"order_refunded":    o.Refunded.Major(),
		"order_refundable":  o.Refundable().Major(),
		"order_status":      o.Status,
		"customer_age_days": ageDays(now, c.CreatedAt),
	}
}
