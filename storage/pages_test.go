package storage

import (
	"context"
	"fmt"
	"testing"
)

// TestPagesPerWrite counts the pages (WAL frames) each kind of hot-path
// write adds to mandate.db, one write per commit as an agent calling one
// tool after another makes them. On two cores the end-to-end cost of a
// guarded call is mostly SQLite writing these pages (two pwrite calls each,
// plus their B-tree work), not waiting (README, Speed), so a change that
// adds an index or a table to the hot path shows here as a number, and one
// that takes pages away can be measured without timing anything.
//
// The bounds are today's counts with a little room: raising one needs a
// reason in the commit.
func TestPagesPerWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("counts pages over a few hundred commits")
	}
	ctx := context.Background()
	db := openTest(t)
	// frames returns how many frames the WAL holds; truncate empties it, so
	// frames after one commit are that commit's pages.
	frames := func() int {
		var busy, log, done int
		if err := db.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &done); err != nil {
			t.Fatal(err)
		}
		return log
	}
	truncate := func() {
		if _, err := db.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 400
	var attempt, outcome, lookup int
	for i := range n {
		// Ids and customers in no particular order, as random action ids
		// and many customers make them.
		id, customer, order := fmt.Sprintf("act_%06d", (i*7919)%n), fmt.Sprintf("cus_%06d", (i*104729)%n), fmt.Sprintf("ord_%06d", (i*7907)%n)
		args := []byte(`{"amount":"1.00","order_id":"` + order + `","reason":"goodwill"}`)
		a := &Action{ID: id, Agent: "demo-agent", Tool: "refund_order", Args: args,
			Status: StatusExecuting, CustomerID: customer, AmountMinor: 100, Currency: "USD"}
		rec := &Record{Agent: "demo-agent", Tool: "refund_order", Args: args, ActionID: id,
			Attrs: []byte(`{"order":{"customer_id":"` + customer + `","status":"delivered","total":"120.00"}}`)}
		truncate()
		if err := db.DecideAndRecord(ctx, a, rec, func(Usage) { a.Decision, rec.Decision = "allow", "allow" }); err != nil {
			t.Fatal(err)
		}
		attempt += frames()

		truncate()
		a.Status, a.Result = StatusExecuted, []byte(`{"refund_id":"re_`+id+`"}`)
		out := &Record{Agent: "demo-agent", Tool: "refund_order", Args: args, ActionID: id, Phase: PhaseOutcome,
			Decision: "allow", Outcome: StatusExecuted}
		// As serve records it: a write-behind nobody waits for, whose
		// commit also indexes the attempt and itself (audit_index).
		db.RecordOutcomeBehind(ctx, a, out)
		db.Settle(ctx)
		outcome += frames()

		truncate()
		look := &Record{Agent: "demo-agent", Tool: "get_order", Args: []byte(`{"order_id":"` + order + `"}`),
			ActionID: "act_l" + id[4:], Phase: PhaseAttempt, Decision: "allow", Outcome: "read"}
		if err := db.Append(ctx, look); err != nil {
			t.Fatal(err)
		}
		lookup += frames()
	}
	for _, c := range []struct {
		what  string
		pages int
		most  float64
	}{
		// The attempt is the commit an agent waits for. Since the
		// search keys moved to audit_index (migration 0023) it writes 8.7
		// pages where it wrote 13.2, and 7.7 since the actions table's
		// index by customer went (0027), and 6.3 since its Merkle nodes
		// are stored later (merkle.go growTree); the outcome, which nobody
		// waits for, 4.3 where it wrote 9.0, with every 32nd indexing the
		// run of 64 records before it and storing their tree nodes. A
		// lookup's record appended urgently, as here, is indexed later:
		// 1.0 pages, 2.4 with its Merkle leaf.
		{"an action's attempt", attempt, 7},
		{"an action's outcome", outcome, 5},
		{"a lookup's record", lookup, 1.5},
	} {
		per := float64(c.pages) / n
		t.Logf("%s: %.1f pages per commit", c.what, per)
		if per > c.most {
			t.Errorf("%s writes %.1f pages per commit, more than %g: what made the hot path touch more of the file?", c.what, per, c.most)
		}
	}
}
