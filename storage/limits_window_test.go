package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWindowCountsEverythingInside: an executing refund recorded less than
// 24 h (and less than 30 days, and a cancellation less than 1 h) ago must
// count, also when it falls in the same minute as now minus the window
// (read with minute > minute(now - window), it did not: an agent could
// make 20 cancellations at 12:00:59 and 20 more at 13:00:01).
func TestWindowCountsEverythingInside(t *testing.T) {
	ctx := context.Background()
	clock := &fixedClock{t: time.Date(2026, 3, 1, 12, 0, 40, 0, time.UTC)} // :40 into the minute
	db := openClocked(t, filepath.Join(t.TempDir(), "mandate.db"), clock)
	rec := func(id, tool string, amount int64) {
		a := &Action{ID: id, Agent: "bot", Tool: tool, Args: json.RawMessage(`{}`), Decision: "allow",
			Status: StatusExecuting, CustomerID: "cus_1", AmountMinor: amount, Currency: "USD"}
		if err := db.RecordAttempt(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: "allow", Outcome: StatusExecuting}); err != nil {
			t.Fatal(err)
		}
	}
	start := clock.Now()
	rec("r1", "refund_order", 500)
	rec("c1", "cancel_order", 0)
	probe := &Action{Agent: "bot", Tool: "refund_order", CustomerID: "cus_1", Currency: "USD"}
	for _, tc := range []struct {
		name  string
		after time.Duration
		check func(Usage) bool
	}{
		{"24h", 24*time.Hour - 10*time.Second, func(u Usage) bool { return u.AgentRefunds24h == 1 && u.AgentRefundedMinor24h == 500 }},
		{"30d", longestWindow - 10*time.Second, func(u Usage) bool { return u.CustomerRefunds30d == 1 }},
		{"1h", time.Hour - 10*time.Second, func(u Usage) bool { return u.AgentCancellations1h == 1 }},
	} {
		clock.Set(start.Add(tc.after)) // the action was recorded tc.after ago: inside the window
		u, err := db.Usage(ctx, probe)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.check(u) {
			t.Errorf("%s window, action recorded %v ago: usage %+v misses it", tc.name, tc.after, u)
		}
	}
}

// TestRunningTotals: counters hold running totals, so every window is the
// newest total less the newest before the window. Refunds in three
// minutes, one of them failed (credited back in its own minute after later
// minutes were counted), then pruning, which must keep the newest row
// before the longest window: without it, a 30-day window would count all
// history.
func TestRunningTotals(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	clock := &fixedClock{t: t0}
	db := openClocked(t, filepath.Join(t.TempDir(), "mandate.db"), clock)
	refund := func(id string, at time.Duration, amount int64) *Action {
		clock.Set(t0.Add(at))
		a := &Action{ID: id, Agent: "bot", Tool: "refund_order", Args: json.RawMessage(`{}`), Decision: "allow",
			Status: StatusExecuting, CustomerID: "cus_1", AmountMinor: amount, Currency: "USD"}
		if err := db.RecordAttempt(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: "allow", Outcome: StatusExecuting, ActionID: id}); err != nil {
			t.Fatal(err)
		}
		return a
	}
	usageAt := func(at time.Duration) Usage {
		t.Helper()
		clock.Set(t0.Add(at))
		u, err := db.Usage(ctx, &Action{Agent: "bot", Tool: "refund_order", CustomerID: "cus_1", Currency: "USD"})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	failed := refund("r1", 0, 100)
	refund("r2", 0, 200)
	refund("r3", 5*time.Minute, 400)
	refund("r4", 2*time.Hour, 800)
	// r1 fails after later minutes were counted: its credit goes to its
	// own minute and every running total after it.
	failed.Status, failed.Error = StatusFailed, "declined"
	if err := db.RecordOutcome(ctx, failed, &Record{Agent: "bot", Tool: "refund_order", Args: failed.Args, Decision: "allow",
		Phase: PhaseOutcome, Outcome: StatusFailed, ActionID: "r1"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at            time.Duration
		minor, n, n30 int64
	}{
		{2*time.Hour + time.Minute, 1400, 3, 3},
		{24*time.Hour + 6*time.Minute, 800, 1, 3}, // r2 and r3 have left the 24 h window
		{24*time.Hour + 2*time.Hour + 2*time.Minute, 0, 0, 3},
		{30*24*time.Hour + 10*time.Minute, 0, 0, 1}, // only r4 is inside 30 days
	} {
		u := usageAt(c.at)
		if u.AgentRefundedMinor24h != c.minor || u.AgentRefunds24h != c.n || u.CustomerRefunds30d != c.n30 {
			t.Errorf("at t0+%v: 24 h %d minor units in %d refunds, 30 d %d refunds; want %d, %d, %d",
				c.at, u.AgentRefundedMinor24h, u.AgentRefunds24h, u.CustomerRefunds30d, c.minor, c.n, c.n30)
		}
	}
	// Pruning at t0 + 30 d + 1 h + 10 min drops the minute of r1 and r2
	// (the minute of r3 is the newest before the cutoff and stays).
	rows := func() int {
		var n int
		if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM usage_totals WHERE scope = ?`, "customer_refunds\x00cus_1").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	clock.Set(t0.Add(30*24*time.Hour + time.Hour + 10*time.Minute))
	if err := db.PruneCounters(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rows(); n != 2 {
		t.Errorf("the customer's scope holds %d rows after pruning, want 2 (r3's minute, kept as the base, and r4's)", n)
	}
	if u := usageAt(30*24*time.Hour + time.Hour + 10*time.Minute); u.CustomerRefunds30d != 1 {
		t.Errorf("after pruning, the 30-day window holds %d refunds, want 1 (r4)", u.CustomerRefunds30d)
	}
	refund("r5", 30*24*time.Hour+time.Hour+11*time.Minute, 1600)
	if u := usageAt(30*24*time.Hour + time.Hour + 12*time.Minute); u.CustomerRefunds30d != 2 || u.AgentRefundedMinor24h != 1600 {
		t.Errorf("after pruning and r5: 30-day window %d refunds, 24 h %d minor units; want 2 and 1600", u.CustomerRefunds30d, u.AgentRefundedMinor24h)
	}
}

// TestUsageRunningTotalsMigration runs migration 0020 on counters kept the
// way 0005 kept them, an amount per minute in usage_counters, and checks
// that usage_totals then holds each scope's running totals and that
// usage_counters is gone (an older process writing it fails).
func TestUsageRunningTotalsMigration(t *testing.T) {
	db := openTest(t)
	engine, scope := "sqlite", "TEXT"
	if db.postgres {
		engine, scope = "postgres", "BYTEA"
	}
	// The tables as they were before 0020.
	for _, q := range []string{
		`DROP TABLE usage_totals`,
		`CREATE TABLE usage_counters (scope ` + scope + ` NOT NULL, minute BIGINT NOT NULL,
			amount_minor BIGINT NOT NULL DEFAULT 0, count BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (scope, minute))`,
	} {
		if _, err := db.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, r := range [][4]any{
		{"a\x00x", 1, 100, 1}, {"a\x00x", 2, 0, 0}, {"a\x00x", 7, 250, 2}, {"a\x00x", 9, -100, -1},
		{"b\x00x", 1, 5, 1}, {"b\x00x", 3, 5, 1},
	} {
		if _, err := db.db.Exec(`INSERT INTO usage_counters (scope, minute, amount_minor, count) VALUES (?, ?, ?, ?)`, r[:]...); err != nil {
			t.Fatal(err)
		}
	}
	body, err := migrationFS.ReadFile("migrations/" + engine + "/0020_usage_running_totals.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.db.Exec(string(body)); err != nil {
		t.Fatalf("migration 0020: %v", err)
	}
	if _, err := db.db.Exec(`INSERT INTO usage_counters (scope, minute) VALUES ('x', 1)`); err == nil {
		t.Error("usage_counters can still be written after migration 0020")
	}
	rows, err := db.db.Query(`SELECT scope, minute, amount_minor, count FROM usage_totals ORDER BY scope, minute`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var scope string
		var m, amount, n int64
		if err := rows.Scan(&scope, &m, &amount, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%d: %d %d", scope[:1], m, amount, n))
	}
	want := []string{"a/1: 100 1", "a/2: 100 1", "a/7: 350 3", "a/9: 250 2", "b/1: 5 1", "b/3: 10 2"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("after migration 0020:\n got %v\nwant %v", got, want)
	}
}

// BenchmarkUsageBusyMinutes reads the limit windows of an agent and a
// customer that had an action in each of the last n minutes: with running
// totals the cost does not grow with n (go test -run '^$' -bench
// BenchmarkUsageBusyMinutes ./storage/).
func BenchmarkUsageBusyMinutes(b *testing.B) {
	for _, busy := range []int{10, 1440, 10000} {
		b.Run(fmt.Sprintf("minutes=%d", busy), func(b *testing.B) {
			ctx := context.Background()
			db := openTest(b)
			now := time.Now()
			a := &Action{Agent: "senior-bot", Tool: "refund_order", CustomerID: "cus_1", AmountMinor: 100, Currency: "USD"}
			if err := db.write(func(tx *Tx) error {
				for i := busy - 1; i >= 0; i-- {
					if err := count(ctx, tx, a, now.Add(-time.Duration(i)*time.Minute), 1); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			var u Usage
			b.ResetTimer()
			for range b.N {
				var err error
				if u, err = usage(ctx, db.db, a, now); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if want := int64(min(busy, 24*60+1)); u.AgentRefunds24h != want { // the window includes the minute it starts in
				b.Fatalf("24 h window holds %d refunds, want %d", u.AgentRefunds24h, want)
			}
		})
	}
}

// TestApprovedBeforeCountedAt: actions approved before counted_at existed
// were debited in the minute they were recorded. Upgraded, they must be
// credited there and cross-checked there: counted in the approval minute
// instead, audit verify reported every such action and a failure after the
// upgrade made a 24 h window negative (room beyond the limit).
func TestApprovedBeforeCountedAt(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	clock := &fixedClock{t: t0}
	db := openClocked(t, filepath.Join(t.TempDir(), "mandate.db"), clock)
	for _, id := range []string{"exec", "run"} {
		clock.Set(t0)
		args := json.RawMessage(`{"amount":"150.00","order_id":"ord_1002","reason":"late"}`)
		a := &Action{ID: id, Agent: "demo-agent", Tool: "refund_order", Args: args, Decision: "require_approval",
			Status: StatusPending, ExpiresAt: t0.Add(24 * time.Hour), CustomerID: "cus_ada", AmountMinor: 15000, Currency: "USD"}
		if err := db.RecordAttempt(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: args, Decision: a.Decision, Outcome: StatusPending}); err != nil {
			t.Fatal(err)
		}
		clock.Set(t0.Add(2 * time.Hour))
		if _, err := db.Decide(ctx, id, Review{Approver: "alice", Approve: true, Decision: "allow"}, nil); err != nil {
			t.Fatal(err)
		}
		// As a version before counted_at left it: debited at the request,
		// counted_at empty.
		if err := db.write(func(tx *Tx) error {
			if err := count(ctx, tx, a, clock.Now(), -1); err != nil {
				return err
			}
			if err := count(ctx, tx, a, a.CreatedAt, +1); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE actions SET counted_at = '' WHERE id = ?`, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		c, err := db.ClaimApproved(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if id == "exec" {
			c.Status = StatusExecuted
			if err := db.RecordOutcome(ctx, c, &Record{Agent: c.Agent, Tool: c.Tool, Args: c.Args, Outcome: StatusExecuted}); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock.Set(t0.Add(2*time.Hour + time.Minute))
	cc, err := db.CrossCheck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Disagreements) != 0 {
		t.Errorf("cross-check of actions approved before counted_at: %v", cc.Disagreements)
	}
	run, err := db.Action(ctx, "run")
	if err != nil {
		t.Fatal(err)
	}
	run.Status = StatusFailed
	if err := db.RecordOutcome(ctx, run, &Record{Agent: run.Agent, Tool: run.Tool, Args: run.Args, Outcome: StatusFailed}); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(24*time.Hour + 30*time.Minute))
	u, err := db.Usage(ctx, &Action{Agent: "demo-agent", Tool: "refund_order", CustomerID: "cus_ada", Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if u.AgentRefundedMinor24h != 0 || u.AgentRefunds24h != 0 {
		t.Errorf("24 h window after the old debits left it and the failed one was credited: %d minor units in %d refunds, want 0 and 0", u.AgentRefundedMinor24h, u.AgentRefunds24h)
	}
	if cc, err := db.CrossCheck(ctx); err != nil || len(cc.Disagreements) != 0 {
		t.Errorf("cross-check after the failure: %v, %v", cc.Disagreements, err)
	}
}
