package storage

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Cross-checking the actions table. The audit chain protects the records,
// but the state people and agents read (`approvals show`, the admin page,
// get_action_status) comes from the actions table, which nothing chains: a
// database writer could rewrite an executed refund as "denied by bob". So
// verify replays each action's audit records into the state they imply and
// compares it with the row:
//
//   - status: the first attempt record gives denied (deny), pending
//     (require_approval) or executing (allow); approval records move it to
//     approved, denied or expired (a refused approval changes nothing); the
//     outcome record to executed or failed. A row executing whose trail says
//     approved is consistent: claiming an approved action writes no record.
//   - approver: who the last approval or denial record names.
//   - agent, tool and decision: the attempt record's.
//   - args: the row's arguments (what an approval executes) must be the
//     attempt record's, byte for byte; compared by SHA-256 and reported as
//     digests, so a disagreement shows no personal data. Without this a
//     writer of the actions table could turn a pending 150.00 refund into
//     1500.00 (and its args_digest with it) and verify would not notice.
//   - a row with no records at all, and records of an action (an approval or
//     outcome, or an allowed or pending attempt) with no row.
//
// Limit counters (usage_totals) are recomputed for the last 30 days, the
// longest window a limit reads (older minutes are pruned): each action the
// trail shows as executing, approved or executed counts once in the minute
// of its attempt record (its approval record, if a person approved it), in
// the scopes its row names. What is not checked:
// the amount, customer and currency an action counts under come from its
// row (the trail holds the agent's arguments, not the converted amount), and
// counters older than the window; an action's result and error text; a
// denied attempt with no row, which a denied read also leaves.

// Disagreement is one thing the tables say that the audit trail does not.
type Disagreement struct {
	ActionID string // "" for a limit counter
	Field    string // status, approver, agent, tool, decision, row, or "usage_totals SCOPE minute M"
	Table    string // what the table holds ("missing": no row)
	Trail    string // what the audit records say
}

func (d Disagreement) String() string {
	if d.ActionID == "" {
		return fmt.Sprintf("%s: table %s, trail %s", d.Field, d.Table, d.Trail)
	}
	return fmt.Sprintf("action %s: %s: table %q, trail %q", d.ActionID, d.Field, d.Table, d.Trail)
}

// CrossCheckResult is what CrossCheck found.
type CrossCheckResult struct {
	Actions       int64          // action rows checked
	Counters      int64          // limit counters (scope and minute) checked
	Disagreements []Disagreement // the first MaxDisagreements, in action id order
	More          int64          // how many more there were
}

// MaxDisagreements bounds how many disagreements CrossCheck lists.
const MaxDisagreements = 1000

// trailState is what an action's audit records say about it.
type trailState struct {
	attempt               bool
	status, approver      string
	agent, tool, decision string
	args                  string    // Digest of the attempt's arguments
	at                    time.Time // the attempt's time
	approvedAt            time.Time // the approval's time, if a person approved it
	records               int
}

// apply moves s by one of the action's records, in chain order.
func (s *trailState) apply(r *Record) {
	s.records++
	switch r.Phase {
	case PhaseAttempt:
		if s.attempt {
			return // a refused sign-in to decide the action names it too
		}
		s.attempt, s.agent, s.tool, s.decision, s.at = true, r.Agent, r.Tool, r.Decision, r.Time
		s.args = Digest(r.Args)
		switch {
		case IsLookupOutcome(r.Outcome):
			s.status = "read"
		case r.Decision == "deny":
			s.status = StatusDenied
		case r.Decision == "require_approval":
			s.status = StatusPending
		default:
			s.status = StatusExecuting
		}
	case PhaseApproval:
		switch r.Outcome {
		case StatusApproved, StatusDenied:
			s.status, s.approver = r.Outcome, r.Approver
			if r.Outcome == StatusApproved {
				s.approvedAt = r.Time
			}
		case StatusExpired:
			s.status = StatusExpired
		}
	case PhaseOutcome:
		s.status = r.Outcome
	}
}

// debited reports whether the action, as the trail shows it, holds its
// share of the limits: from an allowed attempt or an approval until a
// failure or a denial gives it back.
func (s *trailState) debited() bool {
	switch s.status {
	case StatusExecuting, StatusApproved, StatusExecuted:
		return true
	}
	return false
}

// crossRow is the part of an actions row CrossCheck compares.
type crossRow struct {
	id, agent, tool, decision, status, approver string
	args                                        string // Digest of the row's arguments
	customer, currency                          string
	amount                                      int64
	// countedApproval: the row says its limits were debited at its
	// approval (counted_at set), not at its attempt.
	countedApproval bool
}

// crossCheckAudit is CrossCheck's read of the audit trail, ordered by
// action id and seq. On SQLite, audit_index_action_id is on (action_id) and
// holds the rowid (seq), so the indexed records come in the index's order
// and only the few records after the index's prefix (migration 0023) are
// sorted, then merged with them. On PostgreSQL the index is on audit. The
// last column is the action id the record itself holds, which an edit of
// the trail could make differ from the one it was indexed under.
func (db *DB) crossCheckAudit() string {
	if db.postgres {
		return `SELECT action_id, seq, time, agent, tool, decision, phase, outcome, approver, args, action_id
			FROM audit WHERE action_id != '' ORDER BY action_id, seq`
	}
	return `SELECT k.action_id, k.seq, a.time, a.agent, a.tool, a.decision, a.phase, a.outcome, a.approver, a.args, a.action_id
			FROM audit_index k JOIN audit a ON a.seq = k.seq WHERE k.action_id != ''
		UNION ALL
		SELECT action_id, seq, time, agent, tool, decision, phase, outcome, approver, args, action_id
			FROM audit WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_index) AND action_id != ''
		ORDER BY 1, 2`
}

// CrossCheck compares the actions table and the limit counters with the
// audit trail (see above). It reads both in one snapshot and in one pass:
// the actions by id and the audit records by action id, merged like a
// sorted join, so its cost grows with the tables, not with a query per
// action. Counters for the last 30 days are held in memory.
func (db *DB) CrossCheck(ctx context.Context) (CrossCheckResult, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	var res CrossCheckResult
	// One read transaction: a snapshot, so writers at work (an outcome
	// recorded between the two reads) cannot look like disagreements. The
	// two streams read it through conn and conn2 (snapshotConns).
	conn, conn2, end, err := db.snapshotConns(ctx)
	if err != nil {
		return res, unavailable("cross-check", err)
	}
	defer end()

	acts, err := conn.QueryContext(ctx, `SELECT id, agent, tool, decision, status, approver, customer_id, currency, amount_minor, args, counted_at != '' FROM actions ORDER BY id`)
	if err != nil {
		return res, unavailable("read actions", err)
	}
	defer acts.Close()
	recs, err := conn2.QueryContext(ctx, db.crossCheckAudit())
	if err != nil {
		return res, unavailable("read audit", err)
	}
	defer recs.Close()

	add := func(d Disagreement) {
		if len(res.Disagreements) < MaxDisagreements {
			res.Disagreements = append(res.Disagreements, d)
		} else {
			res.More++
		}
	}
	now := db.Now()
	horizon := minute(now.Add(-longestWindow))
	want := map[counterKey][2]int64{}

	var row *crossRow
	nextRow := func() error {
		row = nil
		if !acts.Next() {
			return acts.Err()
		}
		row = &crossRow{}
		var args string
		err := acts.Scan(&row.id, &row.agent, &row.tool, &row.decision, &row.status, &row.approver, &row.customer, &row.currency, &row.amount, &args, &row.countedApproval)
		row.args = Digest([]byte(args))
		return err
	}
	var rec *Record
	nextRec := func() error {
		rec = nil
		if !recs.Next() {
			return recs.Err()
		}
		rec = &Record{}
		var ts, args, stored string
		if err := recs.Scan(&rec.ActionID, &rec.Seq, &ts, &rec.Agent, &rec.Tool, &rec.Decision, &rec.Phase, &rec.Outcome, &rec.Approver, &args, &stored); err != nil {
			return err
		}
		if stored != rec.ActionID {
			// Indexed under one action, holding another now: the record
			// was edited after it was indexed (audit verify names it too).
			add(Disagreement{ActionID: rec.ActionID, Field: "action_id of record " + strconv.FormatInt(rec.Seq, 10), Table: "indexed under " + rec.ActionID, Trail: stored})
		}
		rec.Args = []byte(args)
		rec.Time, _ = time.Parse(time.RFC3339Nano, ts)
		return nil
	}
	if err := nextRow(); err != nil {
		return res, unavailable("read actions", err)
	}
	if err := nextRec(); err != nil {
		return res, unavailable("read audit", err)
	}
	for row != nil || rec != nil {
		// The smaller id of the two streams is the next action.
		id := ""
		switch {
		case row == nil:
			id = rec.ActionID
		case rec == nil || row.id <= rec.ActionID:
			id = row.id
		default:
			id = rec.ActionID
		}
		var st trailState
		for rec != nil && rec.ActionID == id {
			st.apply(rec)
			if err := nextRec(); err != nil {
				return res, unavailable("read audit", err)
			}
		}
		if row == nil || row.id != id {
			// Records, no row: an action's row was deleted, unless these
			// are the records of a read or of a refusal that made none.
			if st.attempt && st.status != "read" && (st.status != StatusDenied || st.records > 1) {
				add(Disagreement{ActionID: id, Field: "row", Table: "missing", Trail: st.status})
			}
			continue
		}
		res.Actions++
		compareAction(row, &st, add)
		// Limits count from the attempt, or from the approval for an
		// action approved since counted_at exists (countedAt). A row
		// rewritten to say otherwise moves the minute expected here away
		// from where the counters hold it, which shows as a disagreement.
		at := st.at
		if row.countedApproval && !st.approvedAt.IsZero() {
			at = st.approvedAt
		}
		if st.debited() && minute(at) > horizon {
			a := Action{Agent: row.agent, Tool: row.tool, CustomerID: row.customer, Currency: row.currency}
			for _, scope := range counterScopes(&a) {
				k := counterKey{scope, minute(at)}
				v := want[k]
				want[k] = [2]int64{v[0] + row.amount, v[1] + 1}
			}
		}
		if err := nextRow(); err != nil {
			return res, unavailable("read actions", err)
		}
	}
	if err := acts.Err(); err != nil {
		return res, unavailable("read actions", err)
	}
	if err := recs.Err(); err != nil {
		return res, unavailable("read audit", err)
	}
	acts.Close()
	recs.Close()
	n, err := checkCounters(ctx, conn, horizon, want, add)
	res.Counters = n
	if err != nil {
		return res, err
	}
	return res, nil
}

// compareAction reports each field of row that st contradicts.
func compareAction(row *crossRow, st *trailState, add func(Disagreement)) {
	if !st.attempt {
		add(Disagreement{ActionID: row.id, Field: "row", Table: row.status, Trail: "no attempt record"})
		return
	}
	status := row.status
	if status == StatusExecuting && st.status == StatusApproved {
		status = StatusApproved // claimed for execution: no record until the outcome
	}
	if status != st.status {
		add(Disagreement{ActionID: row.id, Field: "status", Table: row.status, Trail: st.status})
	}
	if row.approver != st.approver {
		add(Disagreement{ActionID: row.id, Field: "approver", Table: row.approver, Trail: st.approver})
	}
	for _, f := range [][3]string{{"agent", row.agent, st.agent}, {"tool", row.tool, st.tool}, {"decision", row.decision, st.decision},
		{"args", "sha256 " + row.args, "sha256 " + st.args}} {
		if f[1] != f[2] {
			add(Disagreement{ActionID: row.id, Field: f[0], Table: f[1], Trail: f[2]})
		}
	}
}

type counterKey struct {
	scope  string
	minute int64
}

// checkCounters compares the stored limit counters newer than horizon with
// want, recomputed from the trail, and returns how many it compared. The
// rows hold running totals (limits.go), so a minute's amount is its row
// less the row before it in the same scope; rows at or before horizon are
// read only as that base.
func checkCounters(ctx context.Context, conn *sql.Conn, horizon int64, want map[counterKey][2]int64, add func(Disagreement)) (int64, error) {
	rows, err := conn.QueryContext(ctx, `SELECT scope, minute, amount_minor, count FROM usage_totals ORDER BY scope, minute`)
	if err != nil {
		return 0, unavailable("read usage counters", err)
	}
	defer rows.Close()
	var n int64
	var scope string
	var before [2]int64 // scope's running total before the row
	seen := map[counterKey]bool{}
	report := func(k counterKey, have, w [2]int64) {
		if have == w {
			return
		}
		add(Disagreement{
			Field: fmt.Sprintf("usage_totals %s minute %s", strings.ReplaceAll(k.scope, "\x00", "/"), time.Unix(k.minute*60, 0).UTC().Format("2006-01-02T15:04Z")),
			Table: fmt.Sprintf("amount %d count %d", have[0], have[1]),
			Trail: fmt.Sprintf("amount %d count %d", w[0], w[1]),
		})
	}
	for rows.Next() {
		var k counterKey
		var total [2]int64
		if err := rows.Scan(&k.scope, &k.minute, &total[0], &total[1]); err != nil {
			return n, unavailable("read usage counters", err)
		}
		if k.scope != scope {
			scope, before = k.scope, [2]int64{}
		}
		have := [2]int64{total[0] - before[0], total[1] - before[1]}
		before = total
		if k.minute <= horizon {
			continue
		}
		n++
		seen[k] = true
		report(k, have, want[k])
	}
	if err := rows.Err(); err != nil {
		return n, unavailable("read usage counters", err)
	}
	var missing []counterKey
	for k := range want {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	sort.Slice(missing, func(i, j int) bool {
		a, b := missing[i], missing[j]
		return a.scope < b.scope || a.scope == b.scope && a.minute < b.minute
	})
	for _, k := range missing {
		report(k, [2]int64{}, want[k])
	}
	return n, nil
}
