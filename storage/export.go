package storage

import (
	"context"
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
	AfterSeq     int64
}

// Records calls fn for each record matching f, in chain order.
func (db *DB) Records(ctx context.Context, f Filter, fn func(*Record) error) error {
	return records(ctx, db.db, f, fn)
}

// records is Records through src: the pool, or the write transaction that
// builds the Merkle tree from the rows (merkle.go).
func records(ctx context.Context, src queryer, f Filter, fn func(*Record) error) error {
	q := `SELECT seq, time, agent, tool, args, attrs, decision, rule, policy_version, action_id,
		phase, outcome, error, duration_us, prev_hash, hash, approver, comment FROM audit WHERE seq > ?`
	args := []any{f.AfterSeq}
	add := func(cond string, v any) { q += " AND " + cond; args = append(args, v) }
	if !f.Since.IsZero() {
		add("time >= ?", timeText(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < ?", timeText(f.Until))
	}
	if f.Agent != "" {
		add("agent = ?", f.Agent)
	}
	if f.Tool != "" {
		add("tool = ?", f.Tool)
	}
	if f.Decision != "" {
		add("decision = ?", f.Decision)
	}
	if f.ActionID != "" {
		add("action_id = ?", f.ActionID)
	}
	rows, err := src.QueryContext(ctx, q+" ORDER BY seq", args...)
	if err != nil {
		return unavailable("read audit", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Record
		var ts, a, attrs string
		var us int64
		if err := rows.Scan(&r.Seq, &ts, &r.Agent, &r.Tool, &a, &attrs, &r.Decision, &r.Rule, &r.PolicyVersion,
			&r.ActionID, &r.Phase, &r.Outcome, &r.Error, &us, &r.PrevHash, &r.Hash, &r.Approver, &r.Comment); err != nil {
			return unavailable("scan audit", err)
		}
		r.Time, _ = time.Parse(time.RFC3339Nano, ts)
		r.Args, r.Attrs, r.Duration = json.RawMessage(a), json.RawMessage(attrs), time.Duration(us)*time.Microsecond
		if err := fn(&r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// CSVHeader names the CSV export's columns as the JSON Lines export names
// its fields.
var CSVHeader = []string{"seq", "time", "agent", "tool", "args", "attrs", "decision", "rule", "policy_version",
	"action_id", "phase", "outcome", "error", "duration", "prev_hash", "hash", "approver", "comment", "leaf_index"}

// CSVRow is r as one CSV row under CSVHeader, every cell made safe to open
// in a spreadsheet (CSVCell). The new columns come last, so tools reading
// the older columns by position keep working.
func (r *Record) CSVRow() []string {
	row := []string{strconv.FormatInt(r.Seq, 10), r.Time.UTC().Format(time.RFC3339Nano), r.Agent, r.Tool,
		string(r.Args), string(r.Attrs), r.Decision, r.Rule, r.PolicyVersion, r.ActionID, r.Phase, r.Outcome, r.Error,
		strconv.FormatInt(r.Duration.Microseconds(), 10), r.PrevHash, r.Hash, r.Approver, r.Comment,
		strconv.FormatUint(r.LeafIndex(), 10)}
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
