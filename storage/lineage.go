package storage

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"github.com/mandatehq/mandate"
)

// The customer and order an audit record is about, as audit_index keeps
// them on SQLite (migrations 0023, 0026 and 0027, whose view audit_keys
// repeats these expressions exactly): the customer a lookup's answer
// showed (shown_customer), else the one its arguments name, else the one
// its action's row holds (a refund's or a cancellation's customer, read
// from the system of record when it was decided); the order its arguments
// name. indexedCustomer's t is the audit table's name or alias in the
// statement. On PostgreSQL audit_keys holds only the first two (migrations
// 0014 and 0026), and a lineage finds an action's customer through the
// actions table's index instead.
const argsOrder = `json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id')`

func indexedCustomer(t string) string {
	return `COALESCE(NULLIF(` + t + `.shown_customer, ''), json_extract(CASE WHEN json_valid(` + t + `.args) THEN ` + t + `.args END, '$.customer_id'),
		(SELECT NULLIF(customer_id, '') FROM actions WHERE actions.id = ` + t + `.action_id))`
}

// LineageFilter selects the records of one lineage: exactly one of
// CustomerID, OrderID and Agent, or TraceID alone.
type LineageFilter struct {
	CustomerID, OrderID, Agent string
	// TraceID keeps only the actions (every record of them: attempt,
	// approval, outcome) that a call in this W3C trace asked for.
	TraceID string
	// Since drops records older than this; zero keeps all.
	Since time.Time
}

// Lineage calls fn, in time order, for every audit record touching the
// filter's subject:
//
//   - a customer: records whose arguments name the customer
//     (update_account, get_customer), every lookup whose answer showed the
//     customer (find_customer's match, get_order of the customer's order,
//     get_action_status of an action on the customer: Record.ShownCustomer),
//     every record of an action the system of record said was the
//     customer's (refund_order, cancel_order: the action row's customer_id,
//     read when the action was decided), and every record naming an order
//     of such an action (a get_order refused, or recorded before lookups
//     named the customer they showed).
//   - an order: records whose arguments name the order.
//   - an agent: every record the agent wrote, and every record (a person's
//     approval, the outcome) of the actions it asked for, also of those
//     asked for before Since.
//
// Each branch searches an index (audit_keys, migration 0023), so a lineage
// costs what it returns, not the size of the trail; an agent's since Since
// also reads the window's records.
func (db *DB) Lineage(ctx context.Context, f LineageFilter, fn func(*Record) error) error {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	var sub string
	var args []any
	since := ""
	if !f.Since.IsZero() {
		since = timeText(f.Since)
	}
	switch {
	case f.CustomerID != "" && db.postgres:
		sub = `SELECT seq FROM audit_keys WHERE customer_id = ?1
			UNION SELECT seq FROM audit_keys WHERE action_id IN (SELECT id FROM actions WHERE customer_id = ?1 AND customer_id != '')
			UNION SELECT seq FROM audit_keys WHERE order_id IN
				(SELECT json_extract(args, '$.order_id') FROM actions WHERE customer_id = ?1 AND customer_id != '')`
		args = append(args, f.CustomerID)
	case f.CustomerID != "":
		// SQLite: audit_keys.customer_id already names the customer of
		// every record of the customer's actions (indexedCustomer), so the
		// actions table needs no index by customer on the attempt's path.
		// The orders are those the customer's records name.
		sub = `SELECT seq FROM audit_keys WHERE customer_id = ?1
			UNION SELECT seq FROM audit_keys WHERE order_id IN
				(SELECT order_id FROM audit_keys WHERE customer_id = ?1 AND order_id IS NOT NULL)`
		args = append(args, f.CustomerID)
	case f.OrderID != "":
		sub = `SELECT seq FROM audit_keys WHERE order_id = ?1`
		args = append(args, f.OrderID)
	case f.Agent != "":
		sub = `SELECT seq FROM audit_keys WHERE agent = ?1 AND time >= ?2
			UNION SELECT seq FROM audit_keys WHERE action_id IN (SELECT action_id FROM audit_keys WHERE agent = ?1 AND time >= ?2 AND phase = 'attempt')`
		if since != "" {
			// An action asked for before the window and decided or
			// carried out in it (a person's approval a day later): found
			// among the window's records of others, each checked against
			// the actions table, so this branch costs the window's size.
			sub += `
			UNION SELECT k.seq FROM audit_keys k WHERE k.time >= ?2 AND k.phase != 'attempt' AND k.action_id != ''
				AND EXISTS (SELECT 1 FROM actions a WHERE a.id = k.action_id AND a.agent = ?1)`
		}
		args = append(args, f.Agent, since)
	case f.TraceID != "":
		sub = `SELECT seq FROM audit_keys WHERE action_id IN (SELECT action_id FROM audit WHERE trace_id = ?1 AND trace_id != '')`
		args = append(args, f.TraceID)
	default:
		return mandate.Errorf(mandate.EINVALID, "a lineage needs a customer, an order, an agent or a trace")
	}
	q := `SELECT ` + recordColumns + ` FROM audit WHERE seq IN (` + sub + `)`
	if since != "" {
		q += ` AND time >= ?` + itoa(len(args)+1)
		args = append(args, since)
	}
	if f.TraceID != "" && (f.CustomerID != "" || f.OrderID != "" || f.Agent != "") {
		q += ` AND action_id IN (SELECT action_id FROM audit WHERE trace_id = ?` + itoa(len(args)+1) + ` AND trace_id != '')`
		args = append(args, f.TraceID)
	}
	return eachRecord(ctx, db.db, "read lineage", q+` ORDER BY seq`, args, fn)
}

func itoa(n int) string { return strconv.Itoa(n) }

// Correlation returns the trace and conversation ids recorded on the
// attempt of action id ("" when none), for the records of the action
// written outside the agent's call: its outcome after a person's approval
// or after a restart.
func (db *DB) Correlation(ctx context.Context, actionID string) (traceID, conversationID string, err error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	err = db.db.QueryRowContext(ctx, `SELECT trace_id, conversation_id FROM audit WHERE seq = (SELECT MIN(seq) FROM audit_keys WHERE action_id = ? AND phase = 'attempt')`, actionID).
		Scan(&traceID, &conversationID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	if err != nil {
		return "", "", unavailable("read correlation", err)
	}
	return traceID, conversationID, nil
}
