package store

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"

	"github.com/mandatehq/mandate/backend"
)

// The statements every call runs, prepared once per pool in Open: parsing
// them cost more than running them (SQLite's parser was about 13% of a
// guarded refund's CPU when every call parsed its SQL anew). database/sql
// then prepares each once per connection and keeps it.
const (
	qOrder           = `SELECT id, customer_id, status, currency, total, refunded, payment_ref, created_at FROM orders WHERE id = ?`
	qCustomerByID    = `SELECT id, name, email, phone, shipping_address, created_at FROM customers WHERE id = ?`
	qCustomerByEmail = `SELECT id, name, email, phone, shipping_address, created_at FROM customers WHERE email = ?`
	qRefundByKey     = `SELECT id, order_id, amount, currency, reason, idempotency_key, created_at FROM refunds WHERE idempotency_key = ?`
	qRefundKeyUsed   = `SELECT COUNT(*) FROM refunds WHERE idempotency_key = ?`
	qOperationKind   = `SELECT kind FROM operations WHERE idempotency_key = ?`
	qOperation       = `SELECT kind, digest, result FROM operations WHERE idempotency_key = ?`
	qOperationResult = `SELECT result FROM operations WHERE idempotency_key = ? AND kind = ?`
	qInsertRefund    = `INSERT INTO refunds (id, order_id, amount, currency, reason, idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`
	qAddRefunded     = `UPDATE orders SET refunded = refunded + ? WHERE id = ?`
	qCancelOrder     = `UPDATE orders SET status = ?, cancel_reason = ?, cancelled_at = ? WHERE id = ?`
	qInsertOperation = `INSERT INTO operations (idempotency_key, kind, digest, result, created_at) VALUES (?, ?, ?, ?, ?)`
	qEmailTaken      = `SELECT COUNT(*) FROM customers WHERE email = ? AND id <> ?`
)

// readQueries run on the read pool, outside any transaction.
var readQueries = []string{qOrder, qCustomerByID, qCustomerByEmail, qRefundByKey, qOperationResult}

// writeQueries run in read-write transactions on the write connection.
func writeQueries() []string {
	q := []string{qOrder, qCustomerByID, qRefundByKey, qRefundKeyUsed, qOperationKind, qOperation,
		qInsertRefund, qAddRefunded, qCancelOrder, qInsertOperation, qEmailTaken}
	for _, field := range backend.UpdatableFields {
		q = append(q, updateCustomerQuery(field))
	}
	return q
}

// findCustomerQuery is the lookup of a customer by id or by email.
func findCustomerQuery(column string) string {
	if column == "email" {
		return qCustomerByEmail
	}
	return qCustomerByID
}

// stmts holds a pool's prepared statements. It is filled in Open and only
// read afterwards, so it needs no lock. A query missing from it still runs,
// unprepared, and counts in misses, which a test keeps at zero.
type stmts struct {
	m      map[string]*sql.Stmt
	misses *atomic.Int64
}

// prepareAll prepares queries on db. The write pool has one connection,
// which a transaction holds while it runs, so its statements must be
// prepared before any transaction starts: preparing one inside would wait
// for that connection forever.
func prepareAll(ctx context.Context, db *sql.DB, queries []string, misses *atomic.Int64) (stmts, error) {
	s := stmts{m: make(map[string]*sql.Stmt, len(queries)), misses: misses}
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			s.close()
			return stmts{}, err
		}
		s.m[q] = st
	}
	return s, nil
}

// close closes every statement.
func (s stmts) close() error {
	var errs []error
	for _, st := range s.m {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// get returns the prepared statement for query, or nil (counting a miss).
func (s stmts) get(query string) *sql.Stmt {
	if st, ok := s.m[query]; ok {
		return st
	}
	if s.misses != nil {
		s.misses.Add(1)
	}
	return nil
}

// querier runs one statement that returns a row: a reader outside any
// transaction or a writeTx inside one.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// reader runs prepared statements on the read pool. A single SELECT is
// atomic on its own, so a lookup needs no BEGIN and ROLLBACK around it.
type reader struct {
	db    *sql.DB
	stmts stmts
}

// QueryRowContext runs query's prepared statement.
func (r reader) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := r.stmts.get(query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return r.db.QueryRowContext(ctx, query, args...)
}

// writeTx is a read-write transaction whose statements are the write pool's
// prepared ones, bound to the transaction's connection.
type writeTx struct {
	*sql.Tx
	stmts stmts
}

// QueryRowContext runs query's prepared statement in the transaction.
func (t writeTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmts.get(query); st != nil {
		return t.Tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// ExecContext runs query's prepared statement in the transaction.
func (t writeTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmts.get(query); st != nil {
		return t.Tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}
