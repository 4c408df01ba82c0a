package storage

import (
	"context"
	"database/sql"
	"time"

	"github.com/mandatehq/mandate"
)

// CheckAction is CrossCheck for one action: it compares the action's row
// with what its audit records say (status, approver, agent, tool,
// decision, args), so the pages people read an action on (`approvals show`, the
// admin page) can warn when a database writer rewrote the row. Row and
// records are read in one snapshot, so an outcome being recorded meanwhile
// is not a disagreement. An action with neither row nor records is
// not_found; limit counters are left to CrossCheck.
func (db *DB) CheckAction(ctx context.Context, id string) ([]Disagreement, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return nil, unavailable("cross-check", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, db.snapshotBegin()); err != nil {
		return nil, unavailable("cross-check", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")

	row := &crossRow{id: id}
	var args string
	err = conn.QueryRowContext(ctx, `SELECT agent, tool, decision, status, approver, args FROM actions WHERE id = ?`, id).
		Scan(&row.agent, &row.tool, &row.decision, &row.status, &row.approver, &args)
	row.args = Digest([]byte(args))
	if err == sql.ErrNoRows {
		row = nil
	} else if err != nil {
		return nil, unavailable("read actions", err)
	}
	recs, err := conn.QueryContext(ctx, `SELECT seq, time, agent, tool, decision, phase, outcome, approver, args
		FROM audit WHERE seq IN (SELECT seq FROM audit_keys WHERE action_id = ?) ORDER BY seq`, id)
	if err != nil {
		return nil, unavailable("read audit", err)
	}
	defer recs.Close()
	var st trailState
	for recs.Next() {
		var r Record
		var ts, args string
		if err := recs.Scan(&r.Seq, &ts, &r.Agent, &r.Tool, &r.Decision, &r.Phase, &r.Outcome, &r.Approver, &args); err != nil {
			return nil, unavailable("read audit", err)
		}
		r.Args = []byte(args)
		r.Time, _ = time.Parse(time.RFC3339Nano, ts)
		st.apply(&r)
	}
	if err := recs.Err(); err != nil {
		return nil, unavailable("read audit", err)
	}
	var out []Disagreement
	add := func(d Disagreement) { out = append(out, d) }
	switch {
	case row == nil && st.records == 0:
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no action %q", id)
	case row == nil:
		if st.attempt && st.status != "read" && (st.status != StatusDenied || st.records > 1) {
			add(Disagreement{ActionID: id, Field: "row", Table: "missing", Trail: st.status})
		}
	default:
		compareAction(row, &st, add)
	}
	return out, nil
}
