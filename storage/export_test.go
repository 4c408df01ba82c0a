package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// seqs returns the sequence numbers of recs.
func seqs(recs []*Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// appendAll appends recs in order and fails t on any error.
func appendAll(t *testing.T, db *DB, recs []*Record) {
	t.Helper()
	for _, r := range recs {
		if err := db.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecordsFilter(t *testing.T) {
	db := openTest(t)
	base := time.Date(2025, 5, 1, 8, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Minute) }

	type spec struct{ agent, tool, decision, action string }
	specs := []spec{
		{"demo-agent", "get_order", "allow", "act_01"},
		{"demo-agent", "refund_order", "allow", "act_02"},
		{"demo-agent", "refund_order", "allow", "act_02"},
		{"demo-agent", "refund_order", "require_approval", "act_03"},
		{"senior-bot", "refund_order", "allow", "act_04"},
		{"demo-agent", "cancel_order", "deny", "act_05"},
		{"intruder", "get_customer", "deny", "act_06"},
		{"senior-bot", "refund_order", "allow", "act_04"},
		{"demo-agent", "update_account", "allow", "act_07"},
		{"senior-bot", "get_order", "allow", "act_08"},
		{"demo-agent", "refund_order", "deny", "act_09"},
		{"demo-agent", "get_action_status", "allow", "act_10"},
	}
	var all []*Record
	for i, s := range specs {
		all = append(all, &Record{
			Time: at(i), Agent: s.agent, Tool: s.tool, Decision: s.decision, ActionID: s.action,
			Phase: PhaseAttempt, Args: []byte(fmt.Sprintf(`{"n":%d}`, i)), Attrs: []byte(`{"customer_id":"cus_ada"}`),
		})
	}
	appendAll(t, db, all)

	cases := []struct {
		name   string
		filter Filter
		match  func(r *Record) bool
	}{
		{"everything", Filter{}, func(*Record) bool { return true }},
		{"agent demo-agent", Filter{Agent: "demo-agent"}, func(r *Record) bool { return r.Agent == "demo-agent" }},
		{"agent senior-bot", Filter{Agent: "senior-bot"}, func(r *Record) bool { return r.Agent == "senior-bot" }},
		{"agent nobody", Filter{Agent: "nobody"}, func(*Record) bool { return false }},
		{"tool refund_order", Filter{Tool: "refund_order"}, func(r *Record) bool { return r.Tool == "refund_order" }},
		{"tool get_order", Filter{Tool: "get_order"}, func(r *Record) bool { return r.Tool == "get_order" }},
		{"decision deny", Filter{Decision: "deny"}, func(r *Record) bool { return r.Decision == "deny" }},
		{"decision require_approval", Filter{Decision: "require_approval"}, func(r *Record) bool { return r.Decision == "require_approval" }},
		{"action act_04", Filter{ActionID: "act_04"}, func(r *Record) bool { return r.ActionID == "act_04" }},
		{"since, inclusive", Filter{Since: at(5)}, func(r *Record) bool { return !r.Time.Before(at(5)) }},
		{"until, exclusive", Filter{Until: at(5)}, func(r *Record) bool { return r.Time.Before(at(5)) }},
		{"since and until", Filter{Since: at(3), Until: at(8)}, func(r *Record) bool { return !r.Time.Before(at(3)) && r.Time.Before(at(8)) }},
		{"since in another zone", Filter{Since: at(4).In(time.FixedZone("PDT", -7*3600))}, func(r *Record) bool { return !r.Time.Before(at(4)) }},
		{"after seq", Filter{AfterSeq: 7}, func(r *Record) bool { return r.Seq > 7 }},
		{"after the last seq", Filter{AfterSeq: int64(len(all))}, func(*Record) bool { return false }},
		{"agent, tool and decision", Filter{Agent: "demo-agent", Tool: "refund_order", Decision: "allow"},
			func(r *Record) bool {
				return r.Agent == "demo-agent" && r.Tool == "refund_order" && r.Decision == "allow"
			}},
		{"after seq and agent", Filter{AfterSeq: 4, Agent: "senior-bot"}, func(r *Record) bool { return r.Seq > 4 && r.Agent == "senior-bot" }},
		{"tool and until", Filter{Tool: "refund_order", Until: at(7)}, func(r *Record) bool { return r.Tool == "refund_order" && r.Time.Before(at(7)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want []int64
			for _, r := range all {
				if c.match(r) {
					want = append(want, r.Seq)
				}
			}
			got := readAll(t, db, c.filter)
			if !equalSeqs(seqs(got), want) {
				t.Fatalf("Records(%+v) = seqs %v, want %v", c.filter, seqs(got), want)
			}
			for _, r := range got {
				sameRecord(t, r, all[r.Seq-1])
			}
		})
	}
}

// TestRecordsTimeFilterSubsecond filters records whose times have fractions
// of different lengths, as real clocks give.
func TestRecordsTimeFilterSubsecond(t *testing.T) {
	db := openTest(t)
	base := time.Date(2025, 5, 1, 8, 0, 0, 0, time.UTC)
	offsets := []time.Duration{
		500 * time.Millisecond, 1250 * time.Millisecond, 2 * time.Second, 2100 * time.Millisecond, 3*time.Second + 7,
	}
	var all []*Record
	for _, d := range offsets {
		all = append(all, &Record{Time: base.Add(d), Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt})
	}
	appendAll(t, db, all)
	cases := []struct {
		name         string
		since, until time.Duration
	}{
		{"since a whole second", time.Second, 0},
		{"until a whole second", 0, 2 * time.Second},
		{"since a fraction", 2050 * time.Millisecond, 0},
		{"until a fraction", 0, 1300 * time.Millisecond},
		{"window", 1 * time.Second, 3 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Filter
			if c.since != 0 {
				f.Since = base.Add(c.since)
			}
			if c.until != 0 {
				f.Until = base.Add(c.until)
			}
			var want []int64
			for _, r := range all {
				if (f.Since.IsZero() || !r.Time.Before(f.Since)) && (f.Until.IsZero() || r.Time.Before(f.Until)) {
					want = append(want, r.Seq)
				}
			}
			if got := seqs(readAll(t, db, f)); !equalSeqs(got, want) {
				t.Fatalf("Records(since %v, until %v) = seqs %v, want %v", c.since, c.until, got, want)
			}
		})
	}
}

func TestRecordsStopsOnCallbackError(t *testing.T) {
	db := openTest(t)
	var recs []*Record
	for range 5 {
		recs = append(recs, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt})
	}
	appendAll(t, db, recs)
	stop := errors.New("stop")
	calls := 0
	err := db.Records(context.Background(), Filter{}, func(*Record) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Records returned %v, want the callback's error", err)
	}
	if calls != 2 {
		t.Fatalf("callback called %d times, want 2: iteration must stop at the error", calls)
	}
}
