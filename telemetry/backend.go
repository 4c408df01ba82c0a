package telemetry

import (
	"context"
	"errors"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// Backend returns be with every call timed and its errors counted, by
// operation. The adapters stay unaware of metrics; a Payments that can
// check a refund beforehand (backend.RefundChecker) still can, and one that
// can search an order's refunds (backend.RefundFinder) still does.
func (m *Metrics) Backend(be backend.Backend) backend.Backend {
	out := be
	if be.Orders != nil {
		out.Orders = orders{be.Orders, m}
	}
	if be.Customers != nil {
		out.Customers = customers{be.Customers, m}
	}
	if be.Payments != nil {
		p := payments{be.Payments, m}
		out.Payments = p
		if rc, ok := be.Payments.(backend.RefundChecker); ok {
			out.Payments = checkingPayments{p, rc}
		}
	}
	return out
}

// observe records one call of op that started at start and returned err.
func (m *Metrics) observe(op string, start time.Time, err error) {
	m.backendSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.backendErrors.WithLabelValues(op, errorCode(err)).Inc()
	}
}

// errorCode is a short, fixed label for a backend error.
func errorCode(err error) string {
	switch {
	case errors.Is(err, backend.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	if c := mandate.ErrorCode(err); c != "" {
		return c
	}
	return "error"
}

func timed[T any](m *Metrics, op string, f func() (T, error)) (T, error) {
	start := time.Now()
	v, err := f()
	m.observe(op, start, err)
	return v, err
}

type orders struct {
	o backend.Orders
	m *Metrics
}

func (w orders) Order(ctx context.Context, id string) (backend.Order, error) {
	return timed(w.m, "orders.get", func() (backend.Order, error) { return w.o.Order(ctx, id) })
}

func (w orders) CancelOrder(ctx context.Context, req backend.CancelRequest) (backend.Order, error) {
	return timed(w.m, "orders.cancel", func() (backend.Order, error) { return w.o.CancelOrder(ctx, req) })
}

func (w orders) CancellationByKey(ctx context.Context, key string) (backend.Order, error) {
	return timed(w.m, "orders.cancellation_by_key", func() (backend.Order, error) { return w.o.CancellationByKey(ctx, key) })
}

type customers struct {
	c backend.Customers
	m *Metrics
}

func (w customers) Customer(ctx context.Context, id string) (backend.Customer, error) {
	return timed(w.m, "customers.get", func() (backend.Customer, error) { return w.c.Customer(ctx, id) })
}

func (w customers) CustomerByEmail(ctx context.Context, email string) (backend.Customer, error) {
	return timed(w.m, "customers.by_email", func() (backend.Customer, error) { return w.c.CustomerByEmail(ctx, email) })
}

func (w customers) UpdateCustomer(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
	return timed(w.m, "customers.update", func() (backend.Customer, error) { return w.c.UpdateCustomer(ctx, req) })
}

func (w customers) UpdateByKey(ctx context.Context, key string) (backend.Customer, error) {
	return timed(w.m, "customers.update_by_key", func() (backend.Customer, error) { return w.c.UpdateByKey(ctx, key) })
}

type payments struct {
	p backend.Payments
	m *Metrics
}

func (w payments) Refund(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
	return timed(w.m, "payments.refund", func() (backend.Refund, error) { return w.p.Refund(ctx, req) })
}

func (w payments) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	return timed(w.m, "payments.refund_by_key", func() (backend.Refund, error) { return w.p.RefundByKey(ctx, key) })
}

// RefundByKeyOnOrder searches the order's refunds where the wrapped system
// can (backend.RefundFinder), else by the key alone, as the guard does
// with an unwrapped one: with metrics on (every `serve --http`),
// reconciliation must still find a Stripe refund older than the key-only
// search's window.
func (w payments) RefundByKeyOnOrder(ctx context.Context, key, orderID string) (backend.Refund, error) {
	f, ok := w.p.(backend.RefundFinder)
	if !ok {
		return w.RefundByKey(ctx, key)
	}
	return timed(w.m, "payments.refund_by_key_on_order", func() (backend.Refund, error) { return f.RefundByKeyOnOrder(ctx, key, orderID) })
}

// ReportsRefundOrder passes the wrapped system's answer through, so that
// with metrics on the guard still takes a refund's before and after from
// the refund's own answer where it can (backend.RefundReporter), instead
// of reading the order around the call.
func (w payments) ReportsRefundOrder() bool {
	rr, ok := w.p.(backend.RefundReporter)
	return ok && rr.ReportsRefundOrder()
}

// checkingPayments keeps the RefundChecker of the Payments it wraps; the
// check is local (no call), so it is not timed.
type checkingPayments struct {
	payments
	rc backend.RefundChecker
}

func (w checkingPayments) CheckRefundable(o backend.Order) error { return w.rc.CheckRefundable(o) }

var (
	_ backend.Orders        = orders{}
	_ backend.Customers     = customers{}
	_ backend.Payments      = checkingPayments{}
	_ backend.RefundChecker = checkingPayments{}
	_ backend.RefundFinder  = payments{}
	_ backend.RefundFinder  = checkingPayments{}
)
