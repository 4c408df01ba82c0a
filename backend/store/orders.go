package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// Order returns the order with id, or not_found.
func (s *Store) Order(ctx context.Context, id string) (backend.Order, error) {
	q, done := s.warm()
	defer done()
	return findOrder(ctx, q, id)
}

// CancelOrder cancels an order that is pending or processing. A repeat with
// the same idempotency key returns the order as the first call left it, even
// though the order is now cancelled.
func (s *Store) CancelOrder(ctx context.Context, req backend.CancelRequest) (backend.Order, error) {
	if err := requireKey(req.IdempotencyKey); err != nil {
		return backend.Order{}, err
	}
	dig := digest(kindCancelOrder, struct{ OrderID, Reason string }{req.OrderID, req.Reason})

	tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return backend.Order{}, dbError(err)
	}
	defer end()

	var o backend.Order
	if done, err := findOperation(ctx, tx, req.IdempotencyKey, kindCancelOrder, dig, &o); err != nil || done {
		return o, err
	}
	if err := s.checkDeadline(req.NotAfter); err != nil {
		return backend.Order{}, err
	}
	if o, err = findOrder(ctx, tx, req.OrderID); err != nil {
		return backend.Order{}, err
	}
	switch o.Status {
	case backend.StatusPending, backend.StatusProcessing:
	case backend.StatusCancelled:
		return backend.Order{}, mandate.Errorf(mandate.ECONFLICT, "order %s is already cancelled", o.ID)
	default:
		return backend.Order{}, mandate.Errorf(mandate.ECONFLICT,
			"order %s is %s and can no longer be cancelled; only pending or processing orders can", o.ID, o.Status)
	}

	now := s.now()
	if _, err := tx.ExecContext(ctx, qCancelOrder, backend.StatusCancelled, req.Reason, formatTime(now), o.ID); err != nil {
		return backend.Order{}, dbError(err)
	}
	o.Status = backend.StatusCancelled
	if err := recordOperation(ctx, tx, req.IdempotencyKey, kindCancelOrder, dig, o, now); err != nil {
		return backend.Order{}, err
	}
	if err := tx.Commit(); err != nil {
		return backend.Order{}, dbError(err)
	}
	return o, nil
}

// findOrder reads one order, or returns not_found naming the id.
func findOrder(ctx context.Context, q querier, id string) (backend.Order, error) {
	var o backend.Order
	var currency, created string
	err := q.QueryRowContext(ctx, qOrder, id).Scan(&o.ID, &o.CustomerID, &o.Status, &currency, &o.Total.Minor, &o.Refunded.Minor, &o.PaymentRef, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return backend.Order{}, mandate.Errorf(mandate.ENOTFOUND, "no order with id %q", id)
	} else if err != nil {
		return backend.Order{}, dbError(err)
	}
	o.Total.Currency, o.Refunded.Currency = currency, currency
	if o.CreatedAt, err = parseTime(created); err != nil {
		return backend.Order{}, dbError(err)
	}
	return o, nil
}
