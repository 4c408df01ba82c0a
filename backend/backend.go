// Package backend defines the systems of record that Mandate acts on:
// payments (refunds), orders (lookups, cancellation) and customers (lookups,
// account changes). Adapters live in sub-packages: store is the embedded
// SQLite default; real services (Stripe, in-house HTTP APIs) satisfy the same
// interfaces.
//
// Every state-changing call carries an idempotency key: an adapter that sees
// the same key twice returns the first result and changes nothing more.
// Errors are *mandate.Error with codes not_found, invalid, conflict (the
// system refuses in its current state) or unavailable (nothing happened).
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mandatehq/mandate"
)

// Order statuses.
const (
	StatusPending    = "pending"
	StatusProcessing = "processing"
	StatusShipped    = "shipped"
	StatusDelivered  = "delivered"
	StatusCancelled  = "cancelled"
)

// Statuses lists every order status, in lifecycle order.
var Statuses = []string{StatusPending, StatusProcessing, StatusShipped, StatusDelivered, StatusCancelled}

// Customer fields an agent may change with update_account.
const (
	FieldEmail           = "email"
	FieldPhone           = "phone"
	FieldShippingAddress = "shipping_address"
	FieldName            = "name"
)

// UpdatableFields lists the customer fields update_account may change.
var UpdatableFields = []string{FieldEmail, FieldPhone, FieldShippingAddress, FieldName}

// Customer is a customer account. Its contact details are PII: LogValue
// keeps them out of logs.
type Customer struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Email           string    `json:"email"`
	Phone           string    `json:"phone"`
	ShippingAddress string    `json:"shipping_address"`
	CreatedAt       time.Time `json:"created_at"`
}

// LogValue logs a customer by id only.
func (c Customer) LogValue() slog.Value { return slog.StringValue(c.ID) }

// Field is the value of one updatable field (FieldEmail, FieldPhone,
// FieldShippingAddress, FieldName), false for any other name.
func (c Customer) Field(name string) (string, bool) {
	switch name {
	case FieldEmail:
		return c.Email, true
	case FieldPhone:
		return c.Phone, true
	case FieldShippingAddress:
		return c.ShippingAddress, true
	case FieldName:
		return c.Name, true
	}
	return "", false
}

// Order is an order with what was paid and what has been refunded so far,
// both in the order's currency.
type Order struct {
	ID         string        `json:"id"`
	CustomerID string        `json:"customer_id"`
	Status     string        `json:"status"`
	Total      mandate.Money `json:"total"`
	Refunded   mandate.Money `json:"refunded"`
	// PaymentRef is the payment the order was paid with in the payments
	// system (a Stripe PaymentIntent id, pi_...); empty when unknown.
	PaymentRef string    `json:"payment_ref,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Refundable is what can still be refunded on the order.
func (o Order) Refundable() mandate.Money {
	return mandate.Money{Minor: o.Total.Minor - o.Refunded.Minor, Currency: o.Total.Currency}
}

// Refund is money returned to the customer against an order.
type Refund struct {
	ID             string        `json:"id"`
	OrderID        string        `json:"order_id"`
	Amount         mandate.Money `json:"amount"`
	Reason         string        `json:"reason"`
	IdempotencyKey string        `json:"idempotency_key"`
	CreatedAt      time.Time     `json:"created_at"`
	// Order is the order as this refund left it, taken in the same
	// transaction that made the refund, so a caller need not read the
	// order again (and race other changes) to learn what is left to
	// refund. It is nil when the system of record does not say (Stripe),
	// and on a repeat of an earlier refund by its idempotency key, as the
	// order may have changed since.
	Order *Order `json:"order,omitempty"`
}

// RefundRequest asks to return Amount (in the order's currency) on an order.
type RefundRequest struct {
	OrderID        string
	Amount         mandate.Money
	Reason         string
	IdempotencyKey string
	// Agent is the identity that asked, for systems that record it (Stripe
	// metadata); empty when unknown. Adapters must not decide on it.
	Agent string
	// NotAfter is the request's deadline (see ErrDeadlinePassed); zero
	// means none.
	NotAfter time.Time
}

// CancelRequest asks to cancel an order that has not shipped.
type CancelRequest struct {
	OrderID        string
	Reason         string
	IdempotencyKey string
	NotAfter       time.Time // the request's deadline (ErrDeadlinePassed); zero means none
}

// UpdateRequest asks to set one field of a customer's account.
type UpdateRequest struct {
	CustomerID     string
	Field          string
	Value          string
	IdempotencyKey string
	// Expected, when not empty, is a precondition: the value Field must
	// still hold for the change to apply, checked in the same transaction
	// as the write, so that a change someone made after the caller read
	// the account is never overwritten (a remediation's revert puts the
	// earlier value back only while the field still holds what the agent
	// set). When it does not hold, nothing changes and the error is a
	// conflict with ErrChangedSince in its chain. A repeat by idempotency
	// key returns the first result without checking it again.
	Expected string
	NotAfter time.Time // the request's deadline (ErrDeadlinePassed); zero means none
}

// ErrChangedSince is in the chain of an UpdateCustomer error when the
// field no longer held UpdateRequest.Expected: nothing was changed.
var ErrChangedSince = errors.New("the field no longer holds the expected value")

// Payments moves money back to customers.
type Payments interface {
	// Refund returns money on an order. The same IdempotencyKey returns the
	// first refund and moves no more money.
	Refund(ctx context.Context, req RefundRequest) (Refund, error)
	// RefundByKey finds the refund made with an idempotency key, for
	// reconciling after a crash; not_found means none was made.
	RefundByKey(ctx context.Context, key string) (Refund, error)
}

// RefundFinder is implemented by payment systems that can find the refund
// made with an idempotency key among one order's refunds, however old:
// reconciliation uses it when it knows the order. Stripe's RefundByKey has
// only the key, so it scans the account's refunds of the last days, which
// misses an older refund (read as "not done") and, on a busy account, may
// not finish in time; one PaymentIntent's refunds are few.
type RefundFinder interface {
	RefundByKeyOnOrder(ctx context.Context, key, orderID string) (Refund, error)
}

// RefundChecker is implemented by payment systems that can tell before a
// refund is decided that they could never make it for an order (Stripe,
// for an order without a payment reference): the refund is then refused
// when decided, instead of waiting for a person and failing after.
type RefundChecker interface {
	CheckRefundable(o Order) error
}

// RefundReporter is implemented by payment systems whose Refund always
// reports the order as the refund left it (Refund.Order), taken in the
// refund's own transaction: the embedded store. The order's totals before
// and after a refund then come from that one answer, exactly, and the
// guard does not read the order again just before and just after the call.
type RefundReporter interface {
	ReportsRefundOrder() bool
}

// Orders looks up and cancels orders.
type Orders interface {
	Order(ctx context.Context, id string) (Order, error)
	// CancelOrder cancels an order that is pending or processing.
	CancelOrder(ctx context.Context, req CancelRequest) (Order, error)
	// CancellationByKey returns the order as cancelled with an idempotency
	// key, for reconciling after a crash; not_found means it was not.
	CancellationByKey(ctx context.Context, key string) (Order, error)
}

// Customers looks up and changes customer accounts.
type Customers interface {
	Customer(ctx context.Context, id string) (Customer, error)
	CustomerByEmail(ctx context.Context, email string) (Customer, error)
	// UpdateCustomer sets one field of UpdatableFields. An implementation
	// must check req.Expected inside the change, or refuse every request
	// that carries one without changing anything: ignoring it would turn
	// a guarded revert into a blind overwrite.
	UpdateCustomer(ctx context.Context, req UpdateRequest) (Customer, error)
	// UpdateByKey returns the customer as updated with an idempotency key,
	// for reconciling after a crash; not_found means no update was made.
	UpdateByKey(ctx context.Context, key string) (Customer, error)
}

// ErrUnauthorized is in the chain of an adapter's error when the system of
// record refused Mandate's credentials. Its code is unavailable, so every
// action is refused; `mandate backend check` reports it as not
// authenticated.
var ErrUnauthorized = errors.New("credentials refused")

// ErrDeadlinePassed is in the chain of an adapter's refusal of a change
// whose NotAfter had passed when it would have been made: nothing was
// changed, and a change arriving that late under the same key never will
// be. Its code is conflict. Recovery believes "nothing was done with this
// key" only once every request it sent is past its deadline, so a request
// held up on its way (a slow proxy, a starved server) cannot be applied
// after recovery recorded the action failed and the agent tried again
// under a new key. An adapter checks NotAfter, with its own clock, in the
// transaction that makes the change, after finding a change already made
// with the key: a repeat of a change that was made returns it, however
// late. The embedded store and the HTTP contract do; Stripe has no such
// field, so its adapter cannot.
var ErrDeadlinePassed = errors.New("the change arrived after its deadline")

// DeadlineError is the refusal of a change whose deadline had passed at
// now: conflict, with ErrDeadlinePassed in its chain.
func DeadlineError(notAfter, now time.Time) error {
	return fmt.Errorf("%w: %w", mandate.Errorf(mandate.ECONFLICT,
		"the change arrived after its deadline (%s, %s late) and was not made; nothing was changed",
		notAfter.UTC().Format(time.RFC3339Nano), now.Sub(notAfter).Round(time.Millisecond)), ErrDeadlinePassed)
}

// Late reports whether a change with deadline notAfter is too late at now.
func Late(notAfter, now time.Time) bool { return !notAfter.IsZero() && now.After(notAfter) }

// Backend is the set of systems of record one deployment talks to. The
// embedded store implements all three; a deployment may mix adapters.
type Backend struct {
	Payments  Payments
	Orders    Orders
	Customers Customers
}
