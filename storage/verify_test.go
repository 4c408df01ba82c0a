package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vtChainLen is how many records each tamper test starts from.
const vtChainLen = 8

// vtChain opens a new database and appends vtChainLen varied records
// through the normal write path.
func vtChain(t *testing.T) (*DB, []*Record) {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clock := time.Date(2026, 11, 25, 9, 0, 0, 123456000, time.UTC)
	db.Now = func() time.Time { clock = clock.Add(1500 * time.Millisecond); return clock }
	var recs []*Record
	for i := range vtChainLen {
		r := &Record{
			Agent: "demo-agent", Tool: "refund_order",
			Args:     json.RawMessage(`{"amount":"30.00","order_id":"ord_100` + string(rune('1'+i)) + `","reason":"scratched"}`),
			Attrs:    json.RawMessage(`{"currency":"USD","order_total":120}`),
			Decision: "allow", Rule: "p, support_agent, refund_order, allow", PolicyVersion: "v1",
			ActionID: "act_" + string(rune('a'+i)), Phase: PhaseAttempt, Duration: time.Duration(i) * time.Millisecond,
		}
		if i%2 == 1 {
			r.Phase, r.Outcome = PhaseOutcome, StatusExecuted
		}
		if err := db.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return db, recs
}

// tamper runs stmts on a connection of its own, as someone with the file
// and the sqlite3 shell would, after dropping the append-only triggers.
func vtTamper(t *testing.T, db *DB, stmts ...string) {
	t.Helper()
	raw, err := sql.Open("sqlite", DSN(db.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	stmts = append([]string{`DROP TRIGGER IF EXISTS audit_no_update`, `DROP TRIGGER IF EXISTS audit_no_delete`}, stmts...)
	for _, s := range stmts {
		if _, err := raw.Exec(s); err != nil {
			t.Fatalf("tamper %q: %v", s, err)
		}
	}
}

// forged is a record that hashes correctly after prev at seq, as an attacker
// who knows the algorithm would write it.
func vtForged(seq int64, prev string) string {
	r := &Record{
		Time: time.Date(2026, 11, 25, 9, 0, 5, 0, time.UTC), Agent: "demo-agent", Tool: "refund_order",
		Args: json.RawMessage(`{"amount":"2500.00","order_id":"ord_1002","reason":"x"}`), Decision: "allow",
		Phase: PhaseOutcome, Outcome: StatusExecuted, ActionID: "act_forged",
	}
	f := r.fields()
	h := hashRecord(prev, seq, f)
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	return `INSERT INTO audit (seq, time, agent, tool, args, attrs, decision, rule, policy_version, action_id, phase, outcome, error, duration_us, prev_hash, hash)
		VALUES (` + vtItoa(seq) + `, ` + q(f[0]) + `, ` + q(f[1]) + `, ` + q(f[2]) + `, ` + q(f[3]) + `, ` + q(f[4]) + `, ` + q(f[5]) + `, ` +
		q(f[6]) + `, ` + q(f[7]) + `, ` + q(f[8]) + `, ` + q(f[9]) + `, ` + q(f[10]) + `, ` + q(f[11]) + `, ` + f[12] + `, ` + q(prev) + `, ` + q(h) + `)`
}

func vtItoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestVerifyIntact(t *testing.T) {
	db, recs := vtChain(t)
	got, err := db.Verify(context.Background())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Count != int64(len(recs)) || got.Head != recs[len(recs)-1].Hash {
		t.Fatalf("Verify = %+v, want count %d head %s", got, len(recs), recs[len(recs)-1].Hash)
	}
	seq, head, err := db.Head(context.Background())
	if err != nil || seq != int64(len(recs)) || head != got.Head {
		t.Fatalf("Head = %d, %s, %v; want %d, %s", seq, head, err, len(recs), got.Head)
	}
}

func TestVerifyEmpty(t *testing.T) {
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Verify(context.Background())
	if err != nil || got.Count != 0 || got.Head != genesis {
		t.Fatalf("Verify on an empty trail = %+v, %v; want 0 records at the genesis hash", got, err)
	}
}

// TestVerifyTriggersRefuse checks that without dropping the triggers the
// database itself refuses to change a record.
func TestVerifyTriggersRefuse(t *testing.T) {
	db, _ := vtChain(t)
	raw, err := sql.Open("sqlite", DSN(db.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, s := range []string{`UPDATE audit SET agent = 'x' WHERE seq = 3`, `DELETE FROM audit WHERE seq = 3`} {
		if _, err := raw.Exec(s); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Fatalf("%s: err = %v, want the append-only trigger to refuse", s, err)
		}
	}
	if _, err := db.Verify(context.Background()); err != nil {
		t.Fatalf("Verify after refused tampering: %v", err)
	}
}

func TestVerifyTampered(t *testing.T) {
	tests := []struct {
		name string
		// stmts tamper with the chain; hashes are those of the records as
		// written, 1-based like seq.
		stmts    func(hash []string) []string
		seq      int64
		category string
	}{
		{"edit args", func([]string) []string {
			return []string{`UPDATE audit SET args = '{"amount":"999.00","order_id":"ord_1005","reason":"scratched"}' WHERE seq = 5`}
		}, 5, "edited"},
		{"edit time", func([]string) []string {
			return []string{`UPDATE audit SET time = '2026-11-25T09:00:09.123456Z' WHERE seq = 5`}
		}, 5, "edited"},
		{"edit time to an equivalent form", func([]string) []string {
			return []string{`UPDATE audit SET time = replace(time, 'Z', '+00:00') WHERE seq = 5`}
		}, 5, "edited"},
		{"edit agent", func([]string) []string { return []string{`UPDATE audit SET agent = 'senior-bot' WHERE seq = 5`} }, 5, "edited"},
		{"edit tool", func([]string) []string { return []string{`UPDATE audit SET tool = 'cancel_order' WHERE seq = 5`} }, 5, "edited"},
		{"edit attrs", func([]string) []string { return []string{`UPDATE audit SET attrs = '{}' WHERE seq = 5`} }, 5, "edited"},
		{"edit decision", func([]string) []string { return []string{`UPDATE audit SET decision = 'deny' WHERE seq = 5`} }, 5, "edited"},
		{"edit rule", func([]string) []string { return []string{`UPDATE audit SET rule = '' WHERE seq = 5`} }, 5, "edited"},
		{"edit policy version", func([]string) []string { return []string{`UPDATE audit SET policy_version = 'v2' WHERE seq = 5`} }, 5, "edited"},
		{"edit action id", func([]string) []string { return []string{`UPDATE audit SET action_id = 'act_z' WHERE seq = 5`} }, 5, "edited"},
		{"edit phase", func([]string) []string { return []string{`UPDATE audit SET phase = 'outcome' WHERE seq = 5`} }, 5, "edited"},
		{"edit outcome", func([]string) []string { return []string{`UPDATE audit SET outcome = 'failed' WHERE seq = 5`} }, 5, "edited"},
		{"edit error", func([]string) []string { return []string{`UPDATE audit SET error = 'oops' WHERE seq = 5`} }, 5, "edited"},
		{"edit duration", func([]string) []string {
			return []string{`UPDATE audit SET duration_us = duration_us + 1 WHERE seq = 5`}
		}, 5, "edited"},
		{"edit duration to text", func([]string) []string { return []string{`UPDATE audit SET duration_us = '4000us' WHERE seq = 5`} }, 5, "edited"},
		{"edit hash", func([]string) []string { return []string{`UPDATE audit SET hash = upper(hash) WHERE seq = 5`} }, 5, "edited"},
		{"edit prev_hash", func(h []string) []string {
			return []string{`UPDATE audit SET prev_hash = '` + h[2] + `' WHERE seq = 5`}
		}, 5, "edited"},
		{"edit first record", func([]string) []string { return []string{`UPDATE audit SET agent = 'x' WHERE seq = 1`} }, 1, "edited"},
		{"edit last record", func([]string) []string { return []string{`UPDATE audit SET agent = 'x' WHERE seq = 8`} }, 8, "edited"},
		{"edit and rehash", func(h []string) []string {
			// Rewrite record 5 whole, as a clever attacker would; record 6
			// still names the original hash.
			return []string{`DELETE FROM audit WHERE seq = 5`, vtForged(5, h[4])}
		}, 5, "edited"},
		{"delete", func([]string) []string { return []string{`DELETE FROM audit WHERE seq = 4`} }, 4, "deleted"},
		{"delete first", func([]string) []string { return []string{`DELETE FROM audit WHERE seq = 1`} }, 1, "deleted"},
		{"delete two", func([]string) []string { return []string{`DELETE FROM audit WHERE seq IN (3, 4)`} }, 3, "deleted"},
		{"delete and renumber", func([]string) []string {
			return []string{`DELETE FROM audit WHERE seq = 4`,
				`UPDATE audit SET seq = -(seq - 1) WHERE seq > 4`, `UPDATE audit SET seq = -seq WHERE seq < 0`}
		}, 4, "deleted"},
		{"move to the end", func([]string) []string { return []string{`UPDATE audit SET seq = 100 WHERE seq = 4`} }, 4, "deleted"},
		{"insert and renumber", func(h []string) []string {
			return []string{`UPDATE audit SET seq = -seq WHERE seq >= 4`, `UPDATE audit SET seq = -seq + 1 WHERE seq < 0`, vtForged(4, h[3])}
		}, 4, "inserted"},
		{"insert first", func([]string) []string {
			return []string{`UPDATE audit SET seq = -seq`, `UPDATE audit SET seq = -seq + 1 WHERE seq < 0`, vtForged(1, genesis)}
		}, 1, "inserted"},
		{"insert before the first", func([]string) []string { return []string{vtForged(0, genesis)} }, 0, "inserted"},
		{"insert with a made-up hash", func([]string) []string {
			return []string{`UPDATE audit SET seq = -seq WHERE seq >= 4`, `UPDATE audit SET seq = -seq + 1 WHERE seq < 0`,
				strings.Replace(vtForged(4, genesis), "'"+genesis+"'", "'"+strings.Repeat("ab", 32)+"'", 1)}
		}, 4, "inserted"},
		{"append with a made-up hash", func([]string) []string {
			return []string{strings.Replace(vtForged(9, genesis), "'"+genesis+"'", "'"+strings.Repeat("ab", 32)+"'", 1)}
		}, 9, "inserted"},
		{"swap", func([]string) []string {
			return []string{`UPDATE audit SET seq = -3 WHERE seq = 3`, `UPDATE audit SET seq = 3 WHERE seq = 6`, `UPDATE audit SET seq = 6 WHERE seq = -3`}
		}, 3, "reordered"},
		{"swap neighbours", func([]string) []string {
			return []string{`UPDATE audit SET seq = -3 WHERE seq = 3`, `UPDATE audit SET seq = 3 WHERE seq = 4`, `UPDATE audit SET seq = 4 WHERE seq = -3`}
		}, 3, "reordered"},
		{"swap the last two", func([]string) []string {
			return []string{`UPDATE audit SET seq = -7 WHERE seq = 7`, `UPDATE audit SET seq = 7 WHERE seq = 8`, `UPDATE audit SET seq = 8 WHERE seq = -7`}
		}, 7, "reordered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, recs := vtChain(t)
			hashes := make([]string, len(recs)+1)
			for i, r := range recs {
				hashes[i+1] = r.Hash
			}
			vtTamper(t, db, tt.stmts(hashes)...)
			res, err := db.Verify(context.Background())
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("Verify = %v, want a *ChainError", err)
			}
			t.Log(err)
			if ce.Seq != tt.seq || !strings.HasPrefix(ce.Reason, tt.category+":") {
				t.Fatalf("Verify = %v (seq %d), want seq %d %s", err, ce.Seq, tt.seq, tt.category)
			}
			// What is reported intact is the untouched records before it.
			wantHead := genesis
			if tt.seq > 1 {
				wantHead = hashes[tt.seq-1]
			}
			if res.Count != max(tt.seq-1, 0) || res.Head != wantHead {
				t.Fatalf("Verify result %+v, want %d intact records ending at %s", res, max(tt.seq-1, 0), wantHead)
			}
		})
	}
}

// TestVerifySeesLaterAppends checks that Verify reads the chain a writer is
// still extending: each new record moves the head.
func TestVerifySeesLaterAppends(t *testing.T) {
	db, recs := vtChain(t)
	r := &Record{Agent: "demo-agent", Tool: "get_order", Args: json.RawMessage(`{"order_id":"ord_1001"}`), Phase: PhaseAttempt}
	if err := db.Append(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	got, err := db.Verify(context.Background())
	if err != nil || got.Count != int64(len(recs)+1) || got.Head != r.Hash {
		t.Fatalf("Verify = %+v, %v; want %d records at %s", got, err, len(recs)+1, r.Hash)
	}
}
