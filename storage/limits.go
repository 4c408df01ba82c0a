package storage

import (
	"context"
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
func usage(ctx context.Context, tx *Tx, a *Action, now time.Time) (Usage, error) {
	var u Usage
	agentRefunds := "agent_refund\x00" + a.Agent + "\x00"
	day, month, hour := minute(now.Add(-24*time.Hour)), minute(now.Add(-30*24*time.Hour)), minute(now.Add(-time.Hour))
	// One statement for every window: the refund amount in this currency
	// and the refund count in any currency (24 h), the customer's refunds
	// (30 days), the agent's cancellations (1 h).
	err := tx.QueryRowContext(ctx, `
		SELECT
			COALESCE(SUM(CASE WHEN scope = ?1 AND minute > ?4 THEN amount_minor END), 0),
			COALESCE(SUM(CASE WHEN scope >= ?2 AND scope < ?3 AND minute > ?4 THEN count END), 0),
			COALESCE(SUM(CASE WHEN scope = ?5 AND minute > ?6 THEN count END), 0),
			COALESCE(SUM(CASE WHEN scope = ?7 AND minute > ?8 THEN count END), 0)
		FROM usage_counters
		WHERE (scope >= ?2 AND scope < ?3 AND minute > ?4) OR (scope = ?5 AND minute > ?6) OR (scope = ?7 AND minute > ?8)`,
		agentRefunds+a.Currency, agentRefunds, "agent_refund\x00"+a.Agent+"\x01", day,
		"customer_refund\x00"+a.CustomerID, month,
		"agent_cancel\x00"+a.Agent, hour,
	).Scan(&u.AgentRefundedMinor24h, &u.AgentRefunds24h, &u.CustomerRefunds30d, &u.AgentCancellations1h)
	return u, err
}

// count adds (sign +1) or takes back (sign -1) a's use of its counters, in
// the minute it was recorded.
func count(ctx context.Context, tx *Tx, a *Action, at time.Time, sign int64) error {
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
