package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Usage is what has already been allowed within rolling windows: actions
// recorded as executing or executed (a failed action is credited back; a
// pending one has not happened). Policy conditions see it as the limit
// attributes in policy/schema.go.
type Usage struct {
	AgentRefundedMinor24h int64 // refunds by the agent in every currency, in minor units of the base currency (the action's Currency), last 24 h
	AgentRefunds24h       int64 // number of refunds by the agent, last 24 h
	CustomerRefunds30d    int64 // number of refunds to the customer, last 30 days
	AgentCancellations1h  int64 // cancellations by the agent, last hour
	// AgentPending counts the agent's actions waiting for a person now:
	// the cap on pending actions is judged on it.
	AgentPending int64
	// LivePolicy is the version of the live policy (the newest recorded
	// load, see RecordPolicy) as this transaction reads it, "" when none is
	// recorded. Deciding under any other version is
	// refused: one live policy, checked where nothing can overtake it.
	LivePolicy string
	// LiveRates is the version of the live exchange rates (the newest
	// recorded load, see RecordRates) as this transaction reads it, "" when
	// none is recorded. A decision that converted money into the base
	// currency with any other rates is refused, as one under a policy that
	// is not live: limits are judged on the same base amounts everywhere.
	LiveRates string
	// Suspended is the id of the agent's suspension in force, 0 when none
	// (suspend.go): read in the transaction that decides, so a suspension
	// stops the very next action on every process.
	Suspended int64
}

// Counters are kept per minute, so a window is exact to the minute, erring
// towards counting more: the minute that holds now minus the window counts
// whole, so a refund made 24 h and 30 s ago may still count, and one made
// 23 h 59 min 59 s ago always does.
//
// Each row holds a running total: what its scope has counted up to and
// including its minute (usage_totals, migrations/sqlite/0020). A window starting at
// minute s is then the scope's newest row minus its newest row before s:
// two primary-key searches, however many minutes in the window saw an
// action. Per-minute amounts, summed, made every decision read one row per
// busy minute: for an agent acting every minute, 2,880 rows for the two
// 24-hour windows, about 0.5 ms inside the write lock (issue 15).
const counterUnit = time.Minute

// counterScopes names the counters an action debits. Each window is read
// as two searches of the primary key (windowTotal).
//
// Money is counted in one scope per agent across all currencies: the
// action's AmountMinor and Currency are the refund converted into the
// operator's base currency (tools converts with rates.csv before
// recording), so a refund in JPY and one in KWD add up against the same
// limit. The scope still names the base currency so that, if an operator
// ever changes the base, amounts in the old one are never added to amounts
// in the new one (the windows start afresh instead).
func counterScopes(a *Action) []string {
	switch a.Tool {
	case "refund_order":
		s := []string{"agent_refunded\x00" + a.Agent + "\x00" + a.Currency, "agent_refunds\x00" + a.Agent}
		if a.CustomerID != "" {
			s = append(s, "customer_refunds\x00"+a.CustomerID)
		}
		return s
	case "cancel_order":
		return []string{"agent_cancels\x00" + a.Agent}
	}
	return nil
}

// longestWindow is the longest window a limit looks at; older counters are
// pruned.
const longestWindow = 30 * 24 * time.Hour

func minute(t time.Time) int64 { return t.Unix() / int64(counterUnit/time.Second) }

// queryRower is a transaction or the database itself.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Usage returns what a's counters add up to now, read outside any write:
// what the guard would count if a were recorded at this moment. `mandate
// policy explain --db` shows it; the guard itself counts inside the write
// transaction that records the attempt (DecideAndRecord).
func (db *DB) Usage(ctx context.Context, a *Action) (Usage, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	u, err := usage(ctx, db.db, a, db.Now())
	if err != nil {
		return u, unavailable("count usage", err)
	}
	return u, nil
}

// usage sums a's counters inside tx, the transaction that will record a's
// attempt: reading and debiting are serialized across processes by SQLite's
// write lock, so concurrent calls cannot all squeeze under a limit. The same
// statement reads the agent's suspension, its pending actions (an action
// past its expiry waits for nobody, even before ExpirePending marks it;
// timeText has fixed width, so the text comparison orders times) and the
// live policy and rates versions: one statement for everything a decision
// needs from the database.
func usage(ctx context.Context, tx queryRower, a *Action, now time.Time) (Usage, error) {
	var u Usage
	day, month, hour := minute(now.Add(-24*time.Hour)), minute(now.Add(-longestWindow)), minute(now.Add(-time.Hour))
	// One statement, each window two primary-key searches (windowTotal):
	// the refund amount in the base currency and the refund count (24 h),
	// the customer's refunds (30 days), the agent's cancellations (1 h).
	err := tx.QueryRowContext(ctx, usageQuery,
		"agent_refunded\x00"+a.Agent+"\x00"+a.Currency, day,
		"agent_refunds\x00"+a.Agent,
		"customer_refunds\x00"+a.CustomerID, month,
		"agent_cancels\x00"+a.Agent, hour, a.Agent,
		StatusPending, timeText(now),
	).Scan(&u.AgentRefundedMinor24h, &u.AgentRefunds24h, &u.CustomerRefunds30d, &u.AgentCancellations1h, &u.Suspended,
		&u.AgentPending, &u.LivePolicy, &u.LiveRates)
	return u, err
}

// usageQuery is usage's one statement.
var usageQuery = `
	SELECT
		` + windowTotal("amount_minor", "?1", "?2") + `,
		` + windowTotal("count", "?3", "?2") + `,
		` + windowTotal("count", "?4", "?5") + `,
		` + windowTotal("count", "?6", "?7") + `,
		(SELECT COALESCE(MAX(id), 0) FROM suspensions WHERE agent = ?8 AND resumed_at = ''),
		(SELECT COUNT(*) FROM actions WHERE status = ?9 AND agent = ?8 AND expires_at > ?10),
		COALESCE((SELECT version FROM policy_loads ORDER BY seq DESC LIMIT 1), ''),
		COALESCE((SELECT version FROM rates_loads ORDER BY seq DESC LIMIT 1), '')`

// windowTotal is the SQL for what scope (a parameter) counted in column
// from minute start (a parameter) on: its newest running total less its
// newest before start, 0 for a scope with no rows.
func windowTotal(column, scope, start string) string {
	newest := `SELECT ` + column + ` FROM usage_totals WHERE scope = ` + scope
	return `(COALESCE((` + newest + ` ORDER BY minute DESC LIMIT 1), 0) - COALESCE((` +
		newest + ` AND minute < ` + start + ` ORDER BY minute DESC LIMIT 1), 0))`
}

// PruneCounters deletes limit counters older than any window looks at,
// keeping each scope's newest row among them: a window's total subtracts
// the running total before its start.
func (db *DB) PruneCounters(ctx context.Context) error {
	return db.write(func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `
			DELETE FROM usage_totals WHERE minute <= ?1 AND EXISTS (
				SELECT 1 FROM usage_totals later
				WHERE later.scope = usage_totals.scope AND later.minute > usage_totals.minute AND later.minute <= ?1)`,
			minute(db.Now().Add(-longestWindow-time.Hour)))
		return err
	})
}

// count adds (sign +1) or takes back (sign -1) a's use of its counters, in
// the minute it was recorded: that minute's running total, and every later
// one (normally none: an action is counted in the newest minute, and a
// failed one credited back within seconds). Two statements whatever the
// number of scopes: on the attempt's hot path each statement costs about
// as much as the index work it does.
func count(ctx context.Context, tx *Tx, a *Action, at time.Time, sign int64) error {
	scopes := counterScopes(a)
	if len(scopes) == 0 {
		return nil
	}
	if len(scopes) > maxScopes {
		return fmt.Errorf("count: %d counter scopes, at most %d", len(scopes), maxScopes)
	}
	args := []any{minute(at), sign * a.AmountMinor, sign}
	for _, s := range scopes {
		args = append(args, s)
	}
	q := countQueries[tx.db.postgres][len(scopes)-1]
	if _, err := tx.ExecContext(ctx, q[0], args...); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, q[1], args...)
	return err
}

// maxScopes is the most counter scopes one action has (counterScopes).
const maxScopes = 3

// countQueries[postgres][n-1] is count's two statements for n scopes, the
// scopes being ?4 to ?(n+3): the upsert of each scope's row for the minute
// (?1), which starts from the scope's total before that minute (0 for its
// first row), and the update of any later minutes. WHERE true lets SQLite
// tell ON CONFLICT from a join constraint. PostgreSQL keeps scopes as bytea
// (they hold NUL bytes) and cannot infer a parameter's type in a UNION, so
// there the scopes are cast.
var countQueries = map[bool][][2]string{false: countStatements(false), true: countStatements(true)}

func countStatements(postgres bool) [][2]string {
	var qs [][2]string
	for n := 1; n <= maxScopes; n++ {
		var scopes, in []string
		for i := range n {
			p := "?" + strconv.Itoa(4+i)
			if postgres {
				p = "CAST(" + p + " AS BYTEA)"
			}
			scopes = append(scopes, "SELECT "+p+" AS scope")
			in = append(in, p)
		}
		before := func(column string) string {
			return `COALESCE((SELECT p.` + column + ` FROM usage_totals p WHERE p.scope = s.scope AND p.minute < ?1 ORDER BY p.minute DESC LIMIT 1), 0)`
		}
		qs = append(qs, [2]string{`
			INSERT INTO usage_totals (scope, minute, amount_minor, count)
			SELECT s.scope, ?1, ?2 + ` + before("amount_minor") + `, ?3 + ` + before("count") + `
			FROM (` + strings.Join(scopes, " UNION ALL ") + `) AS s
			WHERE true
			ON CONFLICT (scope, minute) DO UPDATE SET
				amount_minor = usage_totals.amount_minor + ?2, count = usage_totals.count + ?3`,
			`UPDATE usage_totals SET amount_minor = amount_minor + ?2, count = count + ?3
			WHERE scope IN (` + strings.Join(in, ", ") + `) AND minute > ?1`})
	}
	return qs
}
