package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// Operation kinds recorded in the operations table.
const (
	kindCancelOrder    = "cancel_order"
	kindUpdateCustomer = "update_customer"
)

// requireKey refuses a change without an idempotency key: without one a
// retried call could act twice.
func requireKey(key string) error {
	if strings.TrimSpace(key) == "" {
		return mandate.Errorf(mandate.EINVALID, "an idempotency key is required")
	}
	return nil
}

// digest fingerprints a request (without its key) so a repeat can be told
// apart from a different request reusing the key.
func digest(kind string, req any) string {
	buf, _ := json.Marshal(struct {
		Kind string
		Req  any
	}{kind, req})
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

// findOperation looks for an operation recorded under key. It reports true
// and fills result when the same request was already done, and refuses a key
// that was used for another request or for a refund.
func findOperation(ctx context.Context, tx writeTx, key, kind, dig string, result any) (bool, error) {
	var gotKind, gotDigest, buf string
	err := tx.QueryRowContext(ctx, qOperation, key).Scan(&gotKind, &gotDigest, &buf)
	if errors.Is(err, sql.ErrNoRows) {
		var n int
		if err := tx.QueryRowContext(ctx, qRefundKeyUsed, key).Scan(&n); err != nil {
			return false, dbError(err)
		} else if n > 0 {
			return false, keyReused(key, "refund")
		}
		return false, nil
	} else if err != nil {
		return false, dbError(err)
	}
	if gotKind != kind || gotDigest != dig {
		return false, keyReused(key, strings.ReplaceAll(gotKind, "_", " "))
	}
	if err := json.Unmarshal([]byte(buf), result); err != nil {
		return false, dbError(err)
	}
	return true, nil
}

// recordOperation stores the result of a change under its key, in the
// change's own transaction, so the change and its record commit together.
func recordOperation(ctx context.Context, tx writeTx, key, kind, dig string, result any, now time.Time) error {
	buf, err := json.Marshal(result)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, qInsertOperation, key, kind, dig, string(buf), formatTime(now))
	return dbError(err)
}

// checkDeadline refuses a change whose deadline has passed by the store's
// own clock (backend.ErrDeadlinePassed). Each change calls it inside its
// write transaction, after finding no change already made with its key
// (a repeat of a change that was made gets it back, however late) and
// before making one, so a request that waited for the write lock past its
// deadline is refused there, not just one that arrived late.
func (s *Store) checkDeadline(notAfter time.Time) error {
	if now := s.now(); backend.Late(notAfter, now) {
		return backend.DeadlineError(notAfter, now)
	}
	return nil
}

// keyReused is the conflict for an idempotency key already spent on a
// different request.
func keyReused(key, what string) error {
	return mandate.Errorf(mandate.ECONFLICT,
		"idempotency key %q was already used for a different %s request; use a new key for a new request",
		key, what)
}

// CancellationByKey returns the order as the cancellation made with key left
// it, or not_found if no cancellation was made with key.
func (s *Store) CancellationByKey(ctx context.Context, key string) (backend.Order, error) {
	var o backend.Order
	return o, s.operationByKey(ctx, key, kindCancelOrder, &o)
}

// UpdateByKey returns the customer as the update made with key left it, or
// not_found if no update was made with key.
func (s *Store) UpdateByKey(ctx context.Context, key string) (backend.Customer, error) {
	var c backend.Customer
	return c, s.operationByKey(ctx, key, kindUpdateCustomer, &c)
}

func (s *Store) operationByKey(ctx context.Context, key, kind string, result any) error {
	if err := requireKey(key); err != nil {
		return err
	}
	var buf string
	err := s.rd.QueryRowContext(ctx, qOperationResult, key, kind).Scan(&buf)
	if errors.Is(err, sql.ErrNoRows) {
		return mandate.Errorf(mandate.ENOTFOUND, "no %s was made with idempotency key %q", strings.ReplaceAll(kind, "_", " "), key)
	} else if err != nil {
		return dbError(err)
	}
	if err := json.Unmarshal([]byte(buf), result); err != nil {
		return dbError(err)
	}
	return nil
}
