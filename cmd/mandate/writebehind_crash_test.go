package main

// A crash in the window the write-behind outcome opens, with no fault
// injection: an agent's refund is answered as soon as the backend answered,
// and its outcome record is only queued to the server's writer, which holds
// a batch of only outcomes back for up to companyWait (storage/writer.go)
// before committing it. The test SIGKILLs the plain binary the moment it
// has read the reply to the last of a few refunds, which usually lands in
// that window and sometimes does not; either way the answer the agent got
// must hold: the refund was made exactly once, the action is either
// executed with one outcome or executing with none, and a restarted server
// reconciles it to exactly one executed outcome.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	// behindRefunds is how many refunds each round sends before the kill:
	// the earlier ones' outcomes commit with the next attempt, the last
	// one's is alone in the writer's queue when the reply goes out.
	behindRefunds = 4
	// behindRounds kills the server this many times, and up to
	// behindMaxRounds while no kill has caught an outcome uncommitted.
	behindRounds, behindMaxRounds = 5, 10
)

// TestKillBeforeWriteBehindOutcome kills `mandate serve` right after the
// reply to a refund, before its write-behind outcome can be committed, and
// checks the files the dead server left and what the restarted one made of
// them.
func TestKillBeforeWriteBehindOutcome(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the server several times")
	}
	dir := t.TempDir()
	dbPath, storePath, shop := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db"), filepath.Join(dir, "shop.json")
	faultShop(t, shop) // old customers, one 100000.00 USD order each: senior-bot's 1.xx refunds execute
	if _, stderr, err := runMandate(t, nil, "store", "import", "--store", storePath, shop); err != nil {
		t.Fatalf("store import: %v\n%s", err, stderr)
	}
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sdb, err := sql.Open("sqlite", "file:"+storePath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()

	told := map[string]string{} // action id → status the agent was told
	var executed []string       // the actions the agent was told were done, in order
	hits, next := 0, 0
	srv := startFaultServer(t, dbPath, storePath)
	round := 0
	for ; round < behindRounds || (hits == 0 && round < behindMaxRounds); round++ {
		// Sequential refunds, each on its own order; the kill follows the
		// read of the last reply with nothing in between.
		var ids []string
		for j := range behindRefunds {
			i := next
			next++
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := srv.c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order", Arguments: map[string]any{
				"order_id": fmt.Sprintf("ord_f%03d", i),
				"amount":   fmt.Sprintf("1.%02d", i%100),
				"reason":   "write-behind crash test",
			}}})
			cancel()
			if err == nil && j == behindRefunds-1 {
				srv.kill(t)
			}
			if err != nil {
				t.Fatalf("round %d refund %d: %v\nstderr:\n%s", round, j, err, srv.stderr.String())
			}
			var got actionResult
			b, _ := json.Marshal(res.StructuredContent)
			if res.IsError || json.Unmarshal(b, &got) != nil || got.ActionID == "" || got.Status != storage.StatusExecuted {
				t.Fatalf("round %d refund %d: %s (%s), want an executed refund", round, j, b, text(res))
			}
			told[got.ActionID] = got.Status
			executed = append(executed, got.ActionID)
			ids = append(ids, got.ActionID)
		}

		// What the dead server left, read afresh from the files.
		refunds := storeRefunds(t, sdb)
		for k, id := range ids {
			if n := refunds[id]; n != 1 {
				t.Fatalf("round %d: the agent was told %s was done; the store has %d refunds with its key, want 1", round, id, n)
			}
			act, err := db.Action(context.Background(), id)
			if err != nil {
				t.Fatalf("round %d: action %s after the kill: %v", round, id, err)
			}
			phases := actionPhases(t, db, id)
			switch {
			case act.Status == storage.StatusExecuted && phases == "attempt: outcome:executed":
			case act.Status == storage.StatusExecuting && phases == "attempt:" && k == len(ids)-1:
				// Only the last can be caught: each earlier outcome was
				// queued before the next attempt, which committed it before
				// the backend was called again.
				hits++
				t.Logf("round %d: killed before %s's outcome was committed", round, id)
			default:
				t.Fatalf("round %d: action %s (refund %d of %d) is %s with audit %q after the kill; want executed with one outcome, or (the last only) executing with none",
					round, id, k+1, len(ids), act.Status, phases)
			}
		}
		if len(refunds) != len(executed) {
			t.Fatalf("round %d: the store has %d refunds, the agent was told of %d", round, len(refunds), len(executed))
		}

		// A restarted server reconciles what was left executing (its
		// --recover-after is 1s), then every allowed action has exactly
		// one outcome, the store exactly the refunds the agent was told
		// of, once each, and `mandate audit verify` passes.
		srv = startFaultServer(t, dbPath, storePath)
		settle(t, db)
		tally := checkFault(t, db, dbPath, storePath, told, true)
		refunds = storeRefunds(t, sdb)
		if len(refunds) != len(executed) || tally.executed != len(executed) || tally.failed != 0 {
			t.Fatalf("round %d: the store has %d refunds and the audit %d executed and %d failed outcomes; the agent was told of %d done",
				round, len(refunds), tally.executed, tally.failed, len(executed))
		}
		for _, id := range executed {
			if n := refunds[id]; n != 1 {
				t.Fatalf("round %d: action %s has %d refunds in the store after recovery, want 1", round, id, n)
			}
		}
		if tally.reconciledDone != hits || tally.reconciledNot != 0 {
			t.Fatalf("round %d: %d outcomes were reconciled as done and %d as not done; %d kills left one executing",
				round, tally.reconciledDone, tally.reconciledNot, hits)
		}
	}
	if err := srv.c.Close(); err != nil {
		t.Fatalf("mandate serve did not exit cleanly when its client hung up: %v\nstderr:\n%s", err, srv.stderr.String())
	}
	srv.checkRace(t)
	t.Logf("%d of %d kills came before the last refund's outcome was committed; %d refunds, each made once and recorded once",
		hits, round, len(executed))
}

// storeRefunds counts the store's refunds by idempotency key (the action id).
func storeRefunds(t *testing.T, sdb *sql.DB) map[string]int {
	t.Helper()
	rows, err := sdb.Query(`SELECT idempotency_key, COUNT(*) FROM refunds GROUP BY idempotency_key`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var key string
		var n int
		if err := rows.Scan(&key, &n); err != nil {
			t.Fatal(err)
		}
		out[key] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// actionPhases lists an action's audit records as "phase:outcome", in order.
func actionPhases(t *testing.T, db *storage.DB, id string) string {
	t.Helper()
	var out []string
	if err := db.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
		out = append(out, r.Phase+":"+r.Outcome)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}
