package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crossFixture writes actions in every state through the normal write
// paths and returns the database path.
func crossFixture(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	clock := &fixedClock{t: approvalT0}
	db := openClocked(t, path, clock)
	defer db.Close()
	refund := func(id, decision, status string) *Action {
		a := &Action{ID: id, Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{"order_id":"ord_1002"}`),
			Decision: decision, Status: status, ExpiresAt: clock.Now().Add(time.Hour),
			CustomerID: "cus_1", AmountMinor: 3000, Currency: "USD"}
		rec := &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: decision}
		if status == StatusPending {
			rec.Outcome = StatusPending
		} else if status == StatusDenied {
			rec.Outcome = "refused"
		}
		if err := db.RecordAttempt(ctx, a, rec); err != nil {
			t.Fatal(err)
		}
		clock.Set(clock.Now().Add(time.Minute))
		return a
	}
	outcome := func(a *Action, status string) {
		a.Status = status
		if err := db.RecordOutcome(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: a.Decision, Outcome: status}); err != nil {
			t.Fatal(err)
		}
	}
	decide := func(id, who string, approve bool) {
		if _, err := db.Decide(ctx, id, Review{Approver: who, Approve: approve, Decision: "allow"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(id string) *Action {
		a, err := db.ClaimApproved(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	outcome(refund("act_1", "allow", StatusExecuting), StatusExecuted)
	refund("act_2", "deny", StatusDenied)
	refund("act_3", "require_approval", StatusPending)
	decide("act_3", "alice", true)
	outcome(claim("act_3"), StatusFailed)
	refund("act_4", "require_approval", StatusPending)
	decide("act_4", "bob", false)
	refund("act_5", "require_approval", StatusPending)
	refund("act_6", "require_approval", StatusPending)
	decide("act_6", "alice", true)
	refund("act_7", "require_approval", StatusPending)
	decide("act_7", "alice", true)
	claim("act_7") // executing, no outcome yet
	refund("act_8", "allow", StatusExecuting)
	// Someone tried to decide act_8 from the CLI with a wrong password.
	if err := db.Append(ctx, &Record{Agent: "mallory", Tool: "approver_login", Decision: "deny", ActionID: "act_8", Phase: PhaseAttempt, Outcome: "refused"}); err != nil {
		t.Fatal(err)
	}
	// A read: records, no row.
	if err := db.Append(ctx, &Record{Agent: "demo-agent", Tool: "lookup_order", Decision: "allow", ActionID: "act_r", Phase: PhaseAttempt, Outcome: "read"}); err != nil {
		t.Fatal(err)
	}
	clock.Set(clock.Now().Add(2 * time.Hour))
	if n, err := db.ExpirePending(ctx, clock.Now()); err != nil || n != 1 {
		t.Fatalf("expired %d, %v; want act_5", n, err)
	}
	return path
}

func TestCrossCheckAgrees(t *testing.T) {
	path := crossFixture(t)
	db := openClocked(t, path, &fixedClock{t: approvalT0.Add(3 * time.Hour)})
	res, err := db.CrossCheck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Disagreements) != 0 || res.Actions != 8 || res.Counters == 0 {
		t.Fatalf("got %d actions, %d counters, disagreements %v; want 8 agreeing actions", res.Actions, res.Counters, res.Disagreements)
	}
}

func TestCrossCheckCatchesRewrites(t *testing.T) {
	for _, c := range []struct {
		name  string
		stmts []string
		want  []string // Disagreement.String() substrings, in order
	}{
		{"executed rewritten as denied by bob",
			[]string{`UPDATE actions SET status = 'denied', approver = 'bob' WHERE id = 'act_1'`},
			[]string{`action act_1: status: table "denied", trail "executed"`, `action act_1: approver: table "bob", trail ""`}},
		{"approver swapped",
			[]string{`UPDATE actions SET approver = 'mallory' WHERE id = 'act_3'`},
			[]string{`action act_3: approver: table "mallory", trail "alice"`}},
		{"denied rewritten as executed",
			[]string{`UPDATE actions SET status = 'executed', decision = 'allow' WHERE id = 'act_2'`},
			[]string{`action act_2: status: table "executed", trail "denied"`, `action act_2: decision: table "allow", trail "deny"`}},
		{"row deleted",
			[]string{`DELETE FROM actions WHERE id = 'act_1'`},
			[]string{`action act_1: row: table "missing", trail "executed"`}},
		{"row invented",
			[]string{`INSERT INTO actions (id, agent, tool, args, args_digest, decision, rule, policy_version, status, result, error,
				created_at, updated_at, expires_at, idempotency_key, customer_id, amount_minor, currency, approver, comment, decided_at)
				SELECT 'act_0', agent, tool, args, args_digest, decision, rule, policy_version, status, result, error,
				created_at, updated_at, expires_at, '', customer_id, amount_minor, currency, approver, comment, decided_at FROM actions WHERE id = 'act_1'`},
			[]string{`action act_0: row: table "executed", trail "no attempt record"`}},
		{"counter lowered",
			[]string{`UPDATE usage_totals SET count = count - 1 WHERE scope = 'agent_refunds' || char(0) || 'demo-agent' AND count > 0`},
			[]string{`usage_totals agent_refunds/demo-agent minute 2026-03-01T12:00Z: table amount 3000 count 0, trail amount 3000 count 1`}},
		{"record moved to another action after it was indexed",
			[]string{`INSERT INTO audit_index (seq, time, agent, action_id, phase) SELECT seq, time, agent, action_id, phase FROM audit`,
				`DROP TRIGGER audit_no_update`,
				`UPDATE audit SET action_id = 'act_9' WHERE seq = (SELECT MIN(seq) FROM audit WHERE action_id = 'act_1')`},
			[]string{`action act_1: action_id of record `}},
		{"counters wiped",
			[]string{`DELETE FROM usage_totals`},
			[]string{`usage_totals agent_refunded/demo-agent/USD minute 2026-03-01T12:00Z: table amount 0 count 0, trail amount 3000 count 1`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := crossFixture(t)
			raw, err := sql.Open("sqlite", DSN(path))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.stmts {
				if _, err := raw.Exec(s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			raw.Close()
			db := openClocked(t, path, &fixedClock{t: approvalT0.Add(3 * time.Hour)})
			res, err := db.CrossCheck(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range res.Disagreements {
				got = append(got, d.String())
			}
			all := strings.Join(got, "\n")
			if len(got) < len(c.want) {
				t.Fatalf("disagreements:\n%s\nwant %d of them", all, len(c.want))
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) {
					t.Fatalf("disagreements:\n%s\nwant #%d to say %q", all, i, w)
				}
			}
		})
	}
}

// TestCrossCheckScales: the cross-check reads each table once, the trail
// in the action_id index's order (no sort), however many actions there are.
func TestCrossCheckScales(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	clock := &fixedClock{t: approvalT0}
	db := openClocked(t, path, clock)
	const n = 2000
	for i := range n {
		a := &Action{ID: fmt.Sprintf("act_%05d", i), Agent: "demo-agent", Tool: "cancel_order", Args: json.RawMessage(`{}`),
			Decision: "allow", Status: StatusExecuting}
		if err := db.RecordAttempt(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.CrossCheck(ctx)
	if err != nil || res.Actions != n || len(res.Disagreements) != 0 {
		t.Fatalf("got %d actions, %v, %v", res.Actions, res.Disagreements, err)
	}
	// The audit read must walk the action_id index, not sort the trail:
	// only the records after audit_index's prefix are sorted.
	var plan []string
	rows, err := db.db.Query(`EXPLAIN QUERY PLAN ` + db.crossCheckAudit())
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, unused int
		var detail string
		rows.Scan(&id, &parent, &unused, &detail)
		plan = append(plan, detail)
	}
	rows.Close()
	t.Logf("plan: %q", plan)
	p := strings.Join(plan, "; ")
	if !strings.Contains(p, "audit_index_action_id") || strings.Count(p, "TEMP B-TREE") > 1 {
		t.Fatalf("audit read plan %q: want the action_id index, and a sort of the unindexed tail only", p)
	}
}
