package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestCheckIndex edits audit_index as a database writer could: each edit
// hides a record from a search or shows one wrongly, leaves the chain
// intact, and is named by CheckIndex.
func TestCheckIndex(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		stmts []string
		want  []string // the mismatches, in order; none for an intact index
	}{
		{"intact", nil, nil},
		{"agent changed", []string{`UPDATE audit_index SET agent = 'someone-else' WHERE seq = 42`},
			[]string{"record 42: audit_index gives it another agent than the record has"}},
		{"times moved back", []string{`UPDATE audit_index SET time = '2000-01-01T00:00:00.000000000Z' WHERE seq BETWEEN 3 AND 4`},
			[]string{"record 3: audit_index gives it another time", "record 4: audit_index gives it another time"}},
		{"action and order changed", []string{`UPDATE audit_index SET action_id = 'act_x', order_id = 'ord_x' WHERE seq = 7`},
			[]string{"record 7: audit_index gives it another action_id, order_id than"}},
		{"customer cleared", []string{`UPDATE audit_index SET customer_id = NULL WHERE seq = 8`},
			[]string{"record 8: audit_index gives it another customer_id"}},
		{"row deleted", []string{`DELETE FROM audit_index WHERE seq = 9`},
			[]string{"record 9: not in audit_index"}},
		// A row past the head stops audit_keys from finding newer records.
		{"row past the head", []string{`INSERT INTO audit_index (seq, time, agent, action_id, phase) VALUES (1000000, '', '', '', '')`},
			[]string{"record 1000000: audit_index has a row for it, but there is no such record"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t)
			if db.postgres {
				t.Skip("PostgreSQL has no audit_index")
			}
			var recs []*Record
			for i := range 50 {
				recs = append(recs, &Record{Agent: "demo-agent", Tool: "get_customer", Phase: PhaseAttempt, ActionID: fmt.Sprintf("act_%d", i),
					Args: json.RawMessage(fmt.Sprintf(`{"customer_id":"cus_%d","order_id":"ord_%d"}`, i, i))})
			}
			appendAll(t, db, recs)
			indexAll(t, db)
			db.Close()
			vtTamper(t, db, c.stmts...)
			db, err := Open(ctx, db.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Verify(ctx); err != nil {
				t.Fatalf("Verify: %v; the index is not chained", err)
			}
			ic, err := db.CheckIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ic.Mismatches {
				got = append(got, m.String())
			}
			if len(got) != len(c.want) {
				t.Fatalf("CheckIndex found %q, want %d mismatches", got, len(c.want))
			}
			for i, w := range c.want {
				if !strings.HasPrefix(got[i], w) {
					t.Fatalf("mismatch %d: %q, want %q", i, got[i], w)
				}
			}
			if want := int64(50); c.want == nil && ic.Indexed != want {
				t.Fatalf("indexed %d records, want %d", ic.Indexed, want)
			}
		})
	}
}

// TestRecordsFilterByRecord: a filter found through audit_index is applied
// to the record too, so an index row edited to name another agent, action
// or time never selects a record that does not match; and Exact selects by
// the records alone, so a record hidden from the index is still found.
func TestRecordsFilterByRecord(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if db.postgres {
		t.Skip("PostgreSQL has no audit_index")
	}
	appendAll(t, db, []*Record{
		{Agent: "alice", Tool: "refund_order", Phase: PhaseAttempt, ActionID: "act_a", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{Agent: "bob", Tool: "refund_order", Phase: PhaseAttempt, ActionID: "act_b"},
		{Agent: "alice", Tool: "refund_order", Phase: PhaseOutcome, ActionID: "act_a"},
		{Agent: "bob", Tool: "refund_order", Phase: PhaseOutcome, ActionID: "act_b"},
	})
	indexAll(t, db)
	db.Close()
	vtTamper(t, db, `UPDATE audit_index SET agent = 'alice', action_id = 'act_a' WHERE seq = 2`, `DELETE FROM audit_index WHERE seq = 3`)
	db, err := Open(ctx, db.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seqs := func(f Filter) string {
		var got []string
		if err := db.Records(ctx, f, func(r *Record) error { got = append(got, fmt.Sprint(r.Seq)); return nil }); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, ",")
	}
	for _, c := range []struct {
		name string
		f    Filter
		want string
	}{
		{"agent", Filter{Agent: "alice"}, "1"},
		{"action", Filter{ActionID: "act_a"}, "1"},
		{"trace", Filter{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}, "1"},
		{"exact action", Filter{ActionID: "act_a", Exact: true}, "1,3"},
		{"exact agent", Filter{Agent: "alice", Exact: true}, "1,3"},
		{"exact trace", Filter{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Exact: true}, "1,3"},
	} {
		if got := seqs(c.f); got != c.want {
			t.Errorf("%s: records %s, want %s", c.name, got, c.want)
		}
	}
}
