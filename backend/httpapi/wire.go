// Package httpapi is Mandate's HTTP contract for in-house order, customer and
// payment services, both sides of it: Client satisfies the backend
// interfaces by calling a service that implements the contract, and Server
// implements the contract in front of any backend value (the embedded store
// first, as `mandate store serve`). The contract is published as
// api/backend.openapi.yaml; docs/backends.md is the implementer's guide.
//
// The wire types below are the contract's JSON shapes. Money crosses the
// wire as a decimal string in the currency's minor-unit precision ("30.00")
// next to its ISO 4217 currency, never as a JSON number, so no float touches
// it on either side.
package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// ContractVersion is the version of the contract this package speaks; it is
// sent in the Mandate-Contract header and is info.version's major number in
// the OpenAPI file.
const ContractVersion = "1"

// Header names the contract uses.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderContract       = "Mandate-Contract"
	// HeaderPreconditions is how a service says, on its answers to
	// GET /customers/{id} and PATCH /customers/{id}, that it checks the
	// PatchExpected member of a PATCH: a comma-separated list that holds
	// PreconditionExpected. Mandate reads it before sending a change with
	// a precondition and sends none to a service that does not say so: a
	// service that ignored the member would overwrite blindly.
	HeaderPreconditions  = "Mandate-Preconditions"
	PreconditionExpected = "expected"
	// HeaderNotAfter carries a change's deadline, an RFC 3339 instant
	// (UTC, fractional seconds): a service must refuse the change, with
	// a 409 deadline_passed problem and no change, if its own clock is
	// past it when it would make the change. An instant, not a duration
	// like "within 10s", because a duration would start when the service
	// first sees the request, and the requests it protects against are
	// the ones a slow proxy or a starved server held back: they would
	// start their countdown late. The cost is clock skew between Mandate
	// and the service, which recovery's margin absorbs (docs/backends.md).
	HeaderNotAfter = "Mandate-Not-After"
)

// ChecksExpected reports whether a service's answer says it checks a
// PATCH's precondition: a HeaderPreconditions value, on any of its lines,
// lists PreconditionExpected. The client and the conformance checks judge
// a service by it alike.
func ChecksExpected(h http.Header) bool {
	for _, v := range h.Values(HeaderPreconditions) {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), PreconditionExpected) {
				return true
			}
		}
	}
	return false
}

// InProgressDetail is the detail of the 409 that GET /operations/{key}
// answers while a change with key is still being made: not known yet, ask
// again later.
const InProgressDetail = "a change with this idempotency key is still in progress; ask again later"

// ProblemType is the URI prefix of the problem types; the stable code is
// also in the "code" member, which is what clients act on.
const ProblemType = "https://mandate.dev/problems/"

// Order is an order on the wire.
type Order struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Status     string    `json:"status"`
	Currency   string    `json:"currency"`
	Total      string    `json:"total"`
	Refunded   string    `json:"refunded"`
	PaymentRef string    `json:"payment_ref,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Customer is a customer account on the wire.
type Customer struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Email           string    `json:"email"`
	Phone           string    `json:"phone"`
	ShippingAddress string    `json:"shipping_address"`
	CreatedAt       time.Time `json:"created_at"`
}

// CustomerList is the answer to GET /customers?email=: zero or one
// customers, as emails are unique.
type CustomerList struct {
	Customers []Customer `json:"customers"`
}

// Refund is a refund on the wire. Order is optional: the order as this
// refund left it, read in the transaction that made the refund, which spares
// Mandate reading the order again; a service that cannot say omits it, and
// so does a repeat by idempotency key.
type Refund struct {
	ID             string    `json:"id"`
	OrderID        string    `json:"order_id"`
	Amount         string    `json:"amount"`
	Currency       string    `json:"currency"`
	Reason         string    `json:"reason"`
	IdempotencyKey string    `json:"idempotency_key"`
	CreatedAt      time.Time `json:"created_at"`
	Order          *Order    `json:"order,omitempty"`
}

// RefundRequest is the body of POST /orders/{id}/refunds.
type RefundRequest struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
	Reason   string `json:"reason"`
}

// CancelRequest is the body of POST /orders/{id}/cancel.
type CancelRequest struct {
	Reason string `json:"reason"`
}

// CustomerPatch is the body of PATCH /customers/{id}: exactly one of the
// updatable fields (email, phone, shipping_address, name), as a JSON object
// with one member, e.g. {"phone": "+1 202 555 0100"}, and optionally the
// precondition PatchExpected: {"phone": "+1 202 555 0100", "expected":
// "+1 202 555 0143"} applies only while the phone is still
// "+1 202 555 0143", checked atomically with the write; otherwise the
// answer is a 409 problem of type ProblemChangedSince and nothing changes.
// It is a body member, not a header (If-Match), because the value is
// personal data, which headers carry into proxies' logs, and may be any
// Unicode text, which headers do not carry.
type CustomerPatch map[string]string

// PatchExpected is the CustomerPatch member holding the precondition.
const PatchExpected = "expected"

// ProblemChangedSince is the type of the 409 problem (code conflict)
// answering a PATCH whose expected value the field no longer held.
const ProblemChangedSince = ProblemType + "changed_since"

// Operation kinds in GET /operations/{key}.
const (
	KindRefund         = "refund"
	KindCancel         = "cancel"
	KindCustomerUpdate = "customer_update"
)

// Operation is what GET /operations/{key} returns: the change made with an
// idempotency key, and its result as the change left it. Exactly one of
// Refund, Order and Customer is set, according to Kind.
type Operation struct {
	IdempotencyKey string    `json:"idempotency_key"`
	Kind           string    `json:"kind"`
	Refund         *Refund   `json:"refund,omitempty"`
	Order          *Order    `json:"order,omitempty"`
	Customer       *Customer `json:"customer,omitempty"`
}

// Problem is an RFC 9457 problem details object with the contract's stable
// Code (not_found, conflict, invalid, unauthorized, unavailable). Detail is
// shown to agents and people, so it must hold no secrets.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// Problem codes beyond the mandate error codes.
const (
	CodeUnauthorized = "unauthorized"
	// CodeDeadlinePassed is the 409 for a change refused because it came
	// after its Mandate-Not-After (backend.ErrDeadlinePassed).
	CodeDeadlinePassed = "deadline_passed"
)

// FromOrder converts an order to its wire form.
func FromOrder(o backend.Order) Order {
	return Order{ID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Currency: o.Total.Currency,
		Total: o.Total.String(), Refunded: o.Refunded.String(), PaymentRef: o.PaymentRef, CreatedAt: o.CreatedAt.UTC()}
}

// ToOrder converts a wire order, refusing amounts that are not decimal
// strings in the order's currency.
func (o Order) ToOrder() (backend.Order, error) {
	total, err := mandate.ParseMoney(o.Total, o.Currency)
	if err != nil {
		return backend.Order{}, badAnswer("order %s: total: %s", o.ID, mandate.ErrorMessage(err))
	}
	refunded, err := mandate.ParseMoney(o.Refunded, o.Currency)
	if err != nil {
		return backend.Order{}, badAnswer("order %s: refunded: %s", o.ID, mandate.ErrorMessage(err))
	}
	if o.ID == "" || o.CustomerID == "" || o.Status == "" {
		return backend.Order{}, badAnswer("order %q lacks id, customer_id or status", o.ID)
	}
	return backend.Order{ID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Total: total,
		Refunded: refunded, PaymentRef: o.PaymentRef, CreatedAt: o.CreatedAt}, nil
}

// FromCustomer converts a customer to its wire form.
func FromCustomer(c backend.Customer) Customer {
	return Customer{ID: c.ID, Name: c.Name, Email: c.Email, Phone: c.Phone,
		ShippingAddress: c.ShippingAddress, CreatedAt: c.CreatedAt.UTC()}
}

// ToCustomer converts a wire customer.
func (c Customer) ToCustomer() (backend.Customer, error) {
	if c.ID == "" {
		return backend.Customer{}, badAnswer("a customer has no id")
	}
	return backend.Customer{ID: c.ID, Name: c.Name, Email: c.Email, Phone: c.Phone,
		ShippingAddress: c.ShippingAddress, CreatedAt: c.CreatedAt}, nil
}

// FromRefund converts a refund to its wire form, with its order when the
// backend reported one.
func FromRefund(r backend.Refund) Refund {
	w := Refund{ID: r.ID, OrderID: r.OrderID, Amount: r.Amount.String(), Currency: r.Amount.Currency,
		Reason: r.Reason, IdempotencyKey: r.IdempotencyKey, CreatedAt: r.CreatedAt.UTC()}
	if r.Order != nil {
		w.Order = ptr(FromOrder(*r.Order))
	}
	return w
}

// ToRefund converts a wire refund. Its order is kept only when it can be
// trusted (see refundOrder); otherwise Order is nil, as when absent.
func (r Refund) ToRefund() (backend.Refund, error) {
	amount, err := mandate.ParseMoney(r.Amount, r.Currency)
	if err != nil {
		return backend.Refund{}, badAnswer("refund %s: amount: %s", r.ID, mandate.ErrorMessage(err))
	}
	if r.ID == "" || r.OrderID == "" {
		return backend.Refund{}, badAnswer("a refund lacks id or order_id")
	}
	out := backend.Refund{ID: r.ID, OrderID: r.OrderID, Amount: amount, Reason: r.Reason,
		IdempotencyKey: r.IdempotencyKey, CreatedAt: r.CreatedAt}
	out.Order = r.refundOrder(amount)
	return out, nil
}

// refundOrder converts the order a refund reported, or returns nil when
// there is none or it cannot be the order this refund left: malformed, of
// another order or currency, or with less refunded than this refund's
// amount. The refund itself is still good, so a doubtful order is dropped
// rather than failing a refund that moved money; the caller then reads the
// order as it would without one. Conformance checks report such an order.
func (r Refund) refundOrder(amount mandate.Money) *backend.Order {
	if r.Order == nil {
		return nil
	}
	o, err := r.Order.ToOrder()
	if err != nil || refundOrderProblem(o, r.OrderID, amount) != "" {
		return nil
	}
	return &o
}

// refundOrderProblem says why o cannot be the order as a refund of amount
// on orderID left it, or "" when it can.
func refundOrderProblem(o backend.Order, orderID string, amount mandate.Money) string {
	switch {
	case o.ID != orderID:
		return fmt.Sprintf("its order is %q, not the refunded order %q", o.ID, orderID)
	case o.Total.Currency != amount.Currency:
		return fmt.Sprintf("its order is in %s, the refund in %s", o.Total.Currency, amount.Currency)
	case o.Refunded.Minor < amount.Minor || o.Refunded.Minor > o.Total.Minor:
		return fmt.Sprintf("its order shows %s refunded of %s, which cannot follow a refund of %s",
			o.Refunded, o.Total, amount)
	}
	return ""
}

// badAnswer is the error for a response that does not follow the contract.
// It is unavailable: Mandate cannot tell what the service did.
func badAnswer(format string, args ...any) error {
	return mandate.Errorf(mandate.EUNAVAILABLE, "the backend service answered outside the contract: "+format, args...)
}
