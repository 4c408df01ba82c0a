package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Filter selects audit records; zero fields select everything.
type Filter struct {
	Since, Until time.Time
	Agent, Tool  string
	Decision     string
	ActionID     string
	// TraceID selects the records of the actions asked for in one W3C
	// trace (32 lowercase hex digits).
	TraceID  string
	AfterSeq int64
	// Exact selects by the audit rows alone, never through audit_index,
	// which is derived and unchained (CheckIndex): for what must not
	// depend on it, such as a proof of an action's records. On SQLite a
	// filter by agent, action, trace or time then reads the whole trail.
	Exact bool
}

// Records calls fn for each record matching f, in chain order.
func (db *DB) Records(ctx context.Context, f Filter, fn func(*Record) error) error {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	return records(ctx, db.db, f, fn, db.postgres)
}

// records is Records through src: the pool, or the write transaction that
// builds the Merkle tree from the rows (merkle.go). audit_keys finds the
// records quickly, and each condition is applied again to the record
// itself, so an edited audit_index row never selects a record that does
// not match; one that hides a record shows in CheckIndex (audit verify).
func records(ctx context.Context, src queryer, f Filter, fn func(*Record) error, postgres bool) error {
	q := `SELECT ` + recordColumns + ` FROM audit WHERE seq > ?`
	args := []any{f.AfterSeq}
	add := func(cond string, v any) { q += " AND " + cond; args = append(args, v) }
	// search adds a condition through audit_keys, unless f is Exact.
	search := func(cond string, v any) {
		if !f.Exact {
			add(cond, v)
		}
	}
	if !f.Since.IsZero() {
		if !postgres {
			// The first record of that time on, found by audit_index's
			// time index; the filter below stays, for a record written
			// under a clock set back. PostgreSQL searches audit_time
			// itself (and would plan this MIN as a walk of seq from 1).
			search("seq >= (SELECT COALESCE(MIN(seq), 9223372036854775807) FROM audit_keys WHERE time >= ?)", timeText(f.Since))
		}
		add("time >= ?", timeText(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < ?", timeText(f.Until))
	}
	if f.Agent != "" {
		search("seq IN (SELECT seq FROM audit_keys WHERE agent = ?)", f.Agent)
		add("agent = ?", f.Agent)
	}
	if f.Tool != "" {
		add("tool = ?", f.Tool)
	}
	if f.Decision != "" {
		add("decision = ?", f.Decision)
	}
	if f.ActionID != "" {
		search("seq IN (SELECT seq FROM audit_keys WHERE action_id = ?)", f.ActionID)
		add("action_id = ?", f.ActionID)
	}
	if f.TraceID != "" {
		// Every record of the actions a call in the trace asked for: the
		// attempt and outcome carry the trace id, a person's approval
		// between them does not. The partial index audit_trace_id finds the
		// actions, audit_keys their records.
		search("seq IN (SELECT seq FROM audit_keys WHERE action_id IN (SELECT action_id FROM audit WHERE trace_id = ? AND trace_id != ''))", f.TraceID)
		add("action_id IN (SELECT action_id FROM audit WHERE trace_id = ? AND trace_id != '')", f.TraceID)
	}
	return eachRecord(ctx, src, "read audit", q+" ORDER BY seq", args, fn)
}

// eachRecord runs q, which selects recordColumns, through src and calls fn
// with each record it returns; what names the read in errors.
func eachRecord(ctx context.Context, src queryer, what, q string, args []any, fn func(*Record) error) error {
	rows, err := src.QueryContext(ctx, q, args...)
	if err != nil {
		return unavailable(what, err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// recordColumns are the columns scanRecord reads, in its order.
const recordColumns = `seq, time, agent, tool, args, attrs, decision, rule, policy_version, action_id,
	phase, outcome, error, duration_us, prev_hash, hash, approver, comment, credential, changes, trace_id, conversation_id, key_id, shown_customer`

// scanRecord reads one row of recordColumns.
func scanRecord(rows *sql.Rows) (*Record, error) {
	var r Record
	var ts, a, attrs, changes string
	var us int64
	if err := rows.Scan(&r.Seq, &ts, &r.Agent, &r.Tool, &a, &attrs, &r.Decision, &r.Rule, &r.PolicyVersion,
		&r.ActionID, &r.Phase, &r.Outcome, &r.Error, &us, &r.PrevHash, &r.Hash, &r.Approver, &r.Comment,
		&r.Credential, &changes, &r.TraceID, &r.ConversationID, &r.KeyID, &r.ShownCustomer); err != nil {
		return nil, unavailable("scan audit", err)
	}
	r.Time, _ = time.Parse(time.RFC3339Nano, ts)
	r.Args, r.Attrs, r.Duration = json.RawMessage(a), json.RawMessage(attrs), time.Duration(us)*time.Microsecond
	if changes != "" {
		r.Changes = json.RawMessage(changes)
	}
	return &r, nil
}

// CSVHeader names the CSV export's columns as the JSON Lines export names
// its fields.
var CSVHeader = []string{"seq", "time", "agent", "tool", "args", "attrs", "decision", "rule", "policy_version",
	"action_id", "phase", "outcome", "error", "duration", "prev_hash", "hash", "approver", "comment",
	"credential", "changes", "trace_id", "conversation_id", "key_id", "leaf_index", "shown_customer"}

// CSVRow is r as one CSV row under CSVHeader, every cell made safe to open
// in a spreadsheet (CSVCell). The new columns come last, so tools reading
// the older columns by position keep working.
func (r *Record) CSVRow() []string {
	row := []string{strconv.FormatInt(r.Seq, 10), r.Time.UTC().Format(time.RFC3339Nano), r.Agent, r.Tool,
		string(r.Args), string(r.Attrs), r.Decision, r.Rule, r.PolicyVersion, r.ActionID, r.Phase, r.Outcome, r.Error,
		strconv.FormatInt(r.Duration.Microseconds(), 10), r.PrevHash, r.Hash, r.Approver, r.Comment,
		r.Credential, string(r.Changes), r.TraceID, r.ConversationID, r.KeyID,
		strconv.FormatUint(r.LeafIndex(), 10), r.ShownCustomer}
	for i, c := range row {
		row[i] = CSVCell(c)
	}
	return row
}

// CSVCell neutralises a cell a spreadsheet would run as a formula: one that
// begins with =, +, -, @, a tab or a carriage return gets a leading
// apostrophe, so Excel, LibreOffice and Google Sheets show it as text.
// Agents and customers write reasons, names and comments, so any cell may
// hold "=HYPERLINK(…)". The apostrophe is visible in other readers; the
// JSON Lines export and the database keep the text exactly.
func CSVCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
