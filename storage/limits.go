package storage

import (
	"context"
	"database/sql"
	"time"
)

// Usage is what has already been allowed within rolling windows, counted
// from actions that were allowed (executing or executed; a failed action
// moved nothing and a pending one has not happened). Policy conditions see
// it as the limit attributes in policy/schema.go.
type Usage struct {
	AgentRefundedMinor24h int64 // refunds by the agent in the action's currency, last 24 h
	AgentRefunds24h       int64 // number of refunds by the agent, last 24 h
	CustomerRefunds30d    int64 // number of refunds to the customer, last 30 days
	AgentCancellations1h  int64 // cancellations by the agent, last hour
}

// usage counts a's agent's and customer's recent allowed actions inside tx,
// the transaction that will record a's attempt: the count and the debit are
// serialized across processes by SQLite's write lock, so concurrent calls
// cannot all squeeze under a limit.
func usage(ctx context.Context, tx *sql.Tx, a *Action, now time.Time) (Usage, error) {
	var u Usage
	since := func(d time.Duration) string { return timeText(now.Add(-d)) }
	err := tx.QueryRowContext(ctx, `
		SELECT COALESCE(SUM(CASE WHEN currency = ? THEN amount_minor ELSE 0 END), 0), COUNT(*)
		FROM actions
		WHERE agent = ? AND tool = 'refund_order' AND created_at >= ? AND status IN ('executing', 'executed')`,
		a.Currency, a.Agent, since(24*time.Hour)).Scan(&u.AgentRefundedMinor24h, &u.AgentRefunds24h)
	if err != nil {
		return u, err
	}
	if a.CustomerID != "" {
		err = tx.QueryRowContext(ctx, `
			SELECT COUNT(*) FROM actions
			WHERE customer_id = ? AND tool = 'refund_order' AND created_at >= ? AND status IN ('executing', 'executed')`,
			a.CustomerID, since(30*24*time.Hour)).Scan(&u.CustomerRefunds30d)
		if err != nil {
			return u, err
		}
	}
	err = tx.QueryRowContext(ctx, `
		SELECT COUNT(*) FROM actions
		WHERE agent = ? AND tool = 'cancel_order' AND created_at >= ? AND status IN ('executing', 'executed')`,
		a.Agent, since(time.Hour)).Scan(&u.AgentCancellations1h)
	return u, err
}
