package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/mandatehq/mandate/storage"
	_ "modernc.org/sqlite" // the stores are read directly for the check
)

type row struct{ what, mandate, bare, ratio, target string }

// table collects the rows printed at the end, and the calls that failed.
type table struct {
	rows     []row
	oneProc4 float64
	failures int
	firstErr string
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func mark(ok bool, target string) string {
	if ok {
		return "met (" + target + ")"
	}
	return "MISSED (" + target + ")"
}

func when(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}

func (t *table) latency(what string, m, b time.Duration, target string) {
	ms0 := ms(m)
	if m == 0 {
		ms0 = "–"
	}
	t.rows = append(t.rows, row{what, ms0, ms(b), ratio(float64(m), float64(b)), target})
}

// floor adds the row of the floor's sequential refunds (the bare server
// with one durable intent commit before each) against the bare server's:
// what the sequential ratio cannot go below on this machine.
func (t *table) floor(f, b result) {
	t.rows = append(t.rows, row{"refund, 1 caller: median of the floor (bare + one durable intent commit)",
		ms(f.median), ms(b.median), ratio(float64(f.median), float64(b.median)), "no guard can go below this"})
}

// cpu adds a row of the servers' CPU time per call, unless the OS did not
// say (cpuTime).
func (t *table) cpu(what string, m, b result) {
	if m.cpu > 0 && b.cpu > 0 {
		t.latency(what, m.cpuPerCall(), b.cpuPerCall(), "")
	}
}

func (t *table) rate(what string, m, b float64, target string) {
	t.rows = append(t.rows, row{what, fmt.Sprintf("%.0f", m), fmt.Sprintf("%.0f", b), ratio(m, b), target})
}

func (t *table) fail(rs ...result) {
	for _, r := range rs {
		t.failures += r.failed
		if t.firstErr == "" {
			t.firstErr = r.firstErr
		}
	}
}

func (t *table) print(w io.Writer, b *bench) {
	fmt.Fprintf(w, "\nMandate vs a bare mcp-go server (same store write, no guard); %s per phase, official Go SDK client over stdio.\n\n", b.cfg.duration)
	fmt.Fprintln(w, "| what | Mandate | bare mcp-go | ratio | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.what, r.mandate, r.bare, r.ratio, r.target)
	}
}

// check compares what the client saw with what was kept: each store's
// refunds are exactly the refunds its client saw succeed (by idempotency
// key, which is the action id), Mandate's audit trail has an attempt and an
// executed outcome for exactly those actions, no action is left executing,
// and the hash chain verifies.
func (b *bench) check(ctx context.Context) error {
	keys, err := storeRefundKeys(ctx, b.bareStore)
	if err != nil {
		return err
	}
	problems := diff("bare store refunds", keys, b.refunds["bare"])
	if b.measuresFloor() {
		for _, f := range []struct{ what, path, query string }{
			{"floor store refunds", b.floorStore, `SELECT idempotency_key FROM refunds`},
			{"floor intents", b.floorIntent, `SELECT id FROM intents`},
		} {
			keys, err := keysIn(ctx, f.path, f.query)
			if err != nil {
				return err
			}
			problems = append(problems, diff(f.what, keys, b.refunds["floor"])...)
		}
	}
	bad, err := checkTrail(ctx, b.mandateDB, b.mandateStore, b.refunds["mandate"])
	if err != nil {
		return err
	}
	problems = append(problems, bad...)
	if b.cfg.only == "" && len(b.refunds["bare"]) == 0 {
		problems = append(problems, "no refund succeeded on the bare server: nothing was measured")
	}
	if len(problems) > 0 {
		return fmt.Errorf("what was kept differs from what the client saw:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// checkTrail compares one run's database and store with the refunds its
// clients saw succeed: the hash chain verifies, the audit trail has an
// allowed attempt and exactly one executed outcome for each of them and
// nothing else, no action is left executing, and the store holds exactly
// those refunds (the prefill agent's history aside). It returns what
// differs.
func checkTrail(ctx context.Context, dbPath, store string, seen map[string]bool) ([]string, error) {
	var problems []string
	keys, err := storeRefundKeys(ctx, store)
	if err != nil {
		return nil, err
	}
	problems = append(problems, diff("store refunds", keys, seen)...)
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if _, err := db.Verify(ctx); err != nil {
		problems = append(problems, "audit chain: "+err.Error())
	}
	attempts, outcomes := map[string]bool{}, map[string]bool{}
	if err := db.Records(ctx, storage.Filter{Tool: "refund_order"}, func(r *storage.Record) error {
		if r.Agent == prefillAgent {
			return nil
		}
		switch {
		case r.Phase == storage.PhaseAttempt && r.Decision == "allow":
			attempts[r.ActionID] = true
		case r.Phase == storage.PhaseOutcome && r.Outcome == storage.StatusExecuted:
			if outcomes[r.ActionID] {
				problems = append(problems, "audit: two executed outcomes for "+r.ActionID)
			}
			outcomes[r.ActionID] = true
		}
		return nil
	}); err != nil {
		return nil, err
	}
	problems = append(problems, diff("audit allowed refund attempts", attempts, seen)...)
	problems = append(problems, diff("audit executed refund outcomes", outcomes, seen)...)
	if left, err := db.ActionsWithStatus(ctx, storage.StatusExecuting, 10); err != nil {
		return nil, err
	} else if len(left) > 0 {
		problems = append(problems, fmt.Sprintf("%d actions still executing after every server stopped (first %s)", len(left), left[0].ID))
	}
	if len(seen) == 0 {
		problems = append(problems, "no refund succeeded: nothing was measured")
	}
	return problems, nil
}

func storeRefundKeys(ctx context.Context, path string) (map[string]bool, error) {
	return keysIn(ctx, path, `SELECT idempotency_key FROM refunds`)
}

// keysIn is the set of strings query (one column) reads from the SQLite
// file at path.
func keysIn(ctx context.Context, path, query string) (map[string]bool, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer rows.Close()
	keys := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		keys[k] = true
	}
	return keys, rows.Err()
}

// diff names what is in got and not in want, and the reverse.
func diff(what string, got, want map[string]bool) []string {
	var extra, missing []string
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	var out []string
	if len(extra) > 0 {
		slices.Sort(extra)
		out = append(out, fmt.Sprintf("%s: %d the client never saw succeed (e.g. %s)", what, len(extra), extra[0]))
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		out = append(out, fmt.Sprintf("%s: %d the client saw succeed are missing (e.g. %s)", what, len(missing), missing[0]))
	}
	return out
}
