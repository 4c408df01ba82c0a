package storage

import (
	"context"
	"encoding/json"
	"path/filepath"
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
