package storage

import (
	"context"
	"database/sql"
	"time"
)

// Usage is what has already been allowed within rolling windows: actions
// recorded as executing or executed (a failed action is credited back; a
// pending one has not happened). Policy conditions see it as the limit
// attributes in policy/schema.go.
type Usage struct {
	AgentRefundedMinor24h int64 // refunds by the agent in the action's currency, last 24 h
	AgentRefunds24h       int64 // number of refunds by the agent, last 24 h
	CustomerRefunds30d    int64 // number of refunds to the customer, last 30 days
	AgentCancellations1h  int64 // cancellations by the agent, last hour
}

// Counters are kept per minute, so a window is exact to the minute: a
// refund made 24 h and 30 s ago may still count.
const counterUnit = time.Minute

// counterScopes names the counters an action debits.
func counterScopes(a *Action) []string {
	switch a.Tool {
	case "refund_order":
		s := []string{"agent_refund\x00" + a.Agent + "\x00" + a.Currency}
		if a.CustomerID != "" {
			s = append(s, "customer_refund\x00"+a.CustomerID)
		}
		return s
	case "cancel_order":
		return []string{"agent_cancel\x00" + a.Agent}
	}
	return nil
}

func minute(t time.Time) int64 { return t.Unix() / int64(counterUnit/time.Second) }

// usage sums a's counters inside tx, the transaction that will record a's
// attempt: reading and debiting are serialized across processes by SQLite's
// write lock, so concurrent calls cannot all squeeze under a limit.
func usage(ctx context.Context, tx *sql.Tx, a *Action, now time.Time) (Usage, error) {
	var u Usage
	sum := func(scope string, window time.Duration, amount, count *int64) error {
		var am, n int64
		err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount_minor), 0), COALESCE(SUM(count), 0)
			FROM usage_counters WHERE scope = ? AND minute > ?`, scope, minute(now.Add(-window))).Scan(&am, &n)
		if amount != nil {
			*amount = am
		}
		if count != nil {
			*count = n
		}
		return err
	}
	if err := sum("agent_refund\x00"+a.Agent+"\x00"+a.Currency, 24*time.Hour, &u.AgentRefundedMinor24h, nil); err != nil {
		return u, err
	}
	// The refund count spans currencies.
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(count), 0) FROM usage_counters
		WHERE scope >= ? AND scope < ? AND minute > ?`,
		"agent_refund\x00"+a.Agent+"\x00", "agent_refund\x00"+a.Agent+"\x01", minute(now.Add(-24*time.Hour))).Scan(&n); err != nil {
		return u, err
	}
	u.AgentRefunds24h = n
	if a.CustomerID != "" {
		if err := sum("customer_refund\x00"+a.CustomerID, 30*24*time.Hour, nil, &u.CustomerRefunds30d); err != nil {
			return u, err
		}
	}
	if err := sum("agent_cancel\x00"+a.Agent, time.Hour, nil, &u.AgentCancellations1h); err != nil {
		return u, err
	}
	return u, nil
}

// count adds (sign +1) or takes back (sign -1) a's use of its counters, in
// the minute it was recorded.
func count(ctx context.Context, tx *sql.Tx, a *Action, at time.Time, sign int64) error {
	for _, scope := range counterScopes(a) {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO usage_counters (scope, minute, amount_minor, count) VALUES (?, ?, ?, ?)
			ON CONFLICT (scope, minute) DO UPDATE SET
				amount_minor = amount_minor + excluded.amount_minor, count = count + excluded.count`,
			scope, minute(at), sign*a.AmountMinor, sign); err != nil {
			return err
		}
	}
	return nil
}
