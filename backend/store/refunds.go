package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// Refund returns money on an order. The amount must be positive, in the
// order's currency, and no more than the order still has refundable; the
// check and the write share one BEGIN IMMEDIATE transaction so concurrent
// refunds, from any process, cannot together exceed the order's total. A
// request past its NotAfter is refused in that transaction too
// (checkDeadline).
//
// A new refund reports the order as it left it (Order). A repeat with the
// same idempotency key, order and amount returns the first refund, without
// Order, and moves no money; the same key with a different order or amount
// is a conflict.
func (s *Store) Refund(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
	if err := requireKey(req.IdempotencyKey); err != nil {
		return backend.Refund{}, err
	}
	if req.Amount.Minor <= 0 {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID, "refund amount must be greater than zero")
	}

	tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return backend.Refund{}, dbError(err)
	}
	defer end()

	if r, err := findRefund(ctx, tx, req.IdempotencyKey); err == nil {
		if r.OrderID != req.OrderID || r.Amount != req.Amount {
			return backend.Refund{}, keyReused(req.IdempotencyKey, "refund")
		}
		return r, nil
	} else if mandate.ErrorCode(err) != mandate.ENOTFOUND {
		return backend.Refund{}, err
	}
	var kind string
	if err := tx.QueryRowContext(ctx, qOperationKind, req.IdempotencyKey).Scan(&kind); err == nil {
		return backend.Refund{}, keyReused(req.IdempotencyKey, strings.ReplaceAll(kind, "_", " "))
	} else if !errors.Is(err, sql.ErrNoRows) {
		return backend.Refund{}, dbError(err)
	}
	if err := s.checkDeadline(req.NotAfter); err != nil {
		return backend.Refund{}, err
	}

	o, err := findOrder(ctx, tx, req.OrderID)
	if err != nil {
		return backend.Refund{}, err
	}
	if req.Amount.Currency != o.Total.Currency {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID,
			"refund is in %q but order %s is in %s; refund in the order's currency", req.Amount.Currency, o.ID, o.Total.Currency)
	}
	if left := o.Refundable(); req.Amount.Minor > left.Minor {
		return backend.Refund{}, mandate.Errorf(mandate.ECONFLICT,
			"refund of %s %s exceeds the %s %s still refundable on %s",
			req.Amount, req.Amount.Currency, left, left.Currency, o.ID)
	}

	r := backend.Refund{
		ID:             newRefundID(),
		OrderID:        o.ID,
		Amount:         req.Amount,
		Reason:         req.Reason,
		IdempotencyKey: req.IdempotencyKey,
		CreatedAt:      s.now(),
	}
	if _, err := tx.ExecContext(ctx, qInsertRefund, r.ID, r.OrderID, r.Amount.Minor, r.Amount.Currency, r.Reason, r.IdempotencyKey, formatTime(r.CreatedAt)); err != nil {
		return backend.Refund{}, dbError(err)
	}
	if _, err := tx.ExecContext(ctx, qAddRefunded, r.Amount.Minor, o.ID); err != nil {
		return backend.Refund{}, dbError(err)
	}
	if err := tx.Commit(); err != nil {
		return backend.Refund{}, dbError(err)
	}
	o.Refunded.Minor += r.Amount.Minor // what the UPDATE above wrote
	r.Order = &o
	return r, nil
}

// ReportsRefundOrder says that Refund always reports the order as the
// refund left it (backend.RefundReporter); only a repeat by idempotency key
// does not.
func (s *Store) ReportsRefundOrder() bool { return true }

// RefundByKey finds the refund made with an idempotency key, so a caller that
// crashed mid-call can learn whether money moved; not_found means it did not.
func (s *Store) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	if err := requireKey(key); err != nil {
		return backend.Refund{}, err
	}
	return findRefund(ctx, s.rd, key)
}

// findRefund reads the refund made with key, or returns not_found.
func findRefund(ctx context.Context, q querier, key string) (backend.Refund, error) {
	var r backend.Refund
	var created string
	err := q.QueryRowContext(ctx, qRefundByKey, key).Scan(&r.ID, &r.OrderID, &r.Amount.Minor, &r.Amount.Currency, &r.Reason, &r.IdempotencyKey, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "no refund was made with idempotency key %q", key)
	} else if err != nil {
		return backend.Refund{}, dbError(err)
	}
	if r.CreatedAt, err = parseTime(created); err != nil {
		return backend.Refund{}, dbError(err)
	}
	return r, nil
}

// newRefundID returns "re_" and 16 random hex digits: unguessable, so an id
// seen in one conversation reveals nothing about others.
func newRefundID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails since Go 1.24
	return "re_" + hex.EncodeToString(b[:])
}
