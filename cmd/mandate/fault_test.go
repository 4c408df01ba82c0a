package main

// Fault tests: the built binary (see TestMain) is killed with SIGKILL at
// random moments while an agent streams refunds to it, and restarted on
// the same files each time. After every restart the server must reconcile
// what the dead one left executing, the audit chain must verify, every
// allowed action must have exactly one outcome, and the store's refunds
// must match the audit's executed outcomes one to one.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	faultKills   = 20   // SIGKILLs per run, as the issue asks
	faultOrders  = 1000 // one old customer with one large order each
	faultStreams = 4    // concurrent refund_order callers per server
	// faultSettle bounds the wait for a restarted server to reconcile what
	// the killed one left executing: --recover-after plus a reconcile pass.
	faultSettle = 5 * time.Second
)

// faultEnv keeps a race-enabled child from sleeping a second at exit.
var faultEnv = []string{"GORACE=atexit_sleep_ms=0"}

// faultServer is one `mandate serve` child that the test may kill.
type faultServer struct {
	c      *client.Client
	cmd    *exec.Cmd
	stderr *syncBuffer
}

// startFaultServer spawns senior-bot's server on the shared files with a
// short recovery grace and initializes an MCP session with it.
func startFaultServer(t *testing.T, dbPath, storePath string) *faultServer {
	t.Helper()
	s := &faultServer{stderr: &syncBuffer{}}
	c, err := client.NewStdioMCPClientWithOptions(bin, faultEnv,
		[]string{"serve", "--agent", "senior-bot", "--db", dbPath, "--store", storePath,
			"--recover-after", "1s", "--backend-timeout", "400ms"},
		transport.WithCommandFunc(func(ctx context.Context, command string, env, args []string) (*exec.Cmd, error) {
			cmd := exec.CommandContext(ctx, command, args...)
			cmd.Env = childEnv(env)
			cmd.Stderr = s.stderr
			s.cmd = cmd
			return cmd, nil
		}))
	if err != nil {
		t.Fatalf("start mandate serve: %v", err)
	}
	s.c = c
	t.Cleanup(func() { c.Close() }) // a no-op once killed or closed
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "mandate-fault", Version: "test"}
	if _, err := c.Initialize(ctx, init); err != nil {
		c.Close()
		t.Fatalf("initialize: %v\nstderr:\n%s", err, s.stderr.String())
	}
	return s
}

// kill sends SIGKILL and reaps the process. The server must still have been
// running: one that died by itself crashed.
func (s *faultServer) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill: %v (the server had already exited)\nstderr:\n%s", err, s.stderr.String())
	}
	err := s.c.Close()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("killed server: wait returned %v, want a kill\nstderr:\n%s", err, s.stderr.String())
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the server ended with %v before it was killed\nstderr:\n%s", err, s.stderr.String())
	}
	s.checkRace(t)
}

func (s *faultServer) checkRace(t *testing.T) {
	t.Helper()
	if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
		t.Fatalf("mandate serve had a data race:\n%s", s.stderr.String())
	}
}

// faultShop writes the import file: faultOrders customers with accounts
// years old, each with one order of 100000.00 USD, so refunds of 1.00 to
// 1.99 are never near what is refundable.
func faultShop(t *testing.T, path string) {
	t.Helper()
	type rec = map[string]string
	var f struct {
		Customers []rec `json:"customers"`
		Orders    []rec `json:"orders"`
	}
	for i := range faultOrders {
		c := fmt.Sprintf("cus_f%03d", i)
		f.Customers = append(f.Customers, rec{"id": c, "name": "Fault " + c, "email": c + "@example.com", "created_at": "2020-01-01T00:00:00Z"})
		f.Orders = append(f.Orders, rec{"id": fmt.Sprintf("ord_f%03d", i), "customer_id": c, "status": "delivered",
			"currency": "USD", "total": "100000.00", "created_at": "2026-01-01T00:00:00Z"})
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// settle waits until no action is left executing: the killed server's
// in-flight refunds have been reconciled by the live one.
func settle(t *testing.T, db *storage.DB) {
	t.Helper()
	deadline := time.Now().Add(faultSettle)
	for {
		left, err := db.ActionsWithStatus(context.Background(), storage.StatusExecuting, 100)
		if err != nil {
			t.Fatalf("list executing actions: %v", err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var ids []string
			for _, a := range left {
				ids = append(ids, fmt.Sprintf("%s (updated %s)", a.ID, a.UpdatedAt.Format(time.StampMilli)))
			}
			t.Fatalf("%d actions still executing %v after a restart: %v", len(left), faultSettle, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// faultTally is what the audit says happened so far.
type faultTally struct {
	records                       int
	decisions                     map[string]int
	executed, failed              int
	reconciledDone, reconciledNot int
	refundedMinor                 int64
}

// checkFault verifies the audit chain and checks, with the servers idle,
// that every allowed refund has exactly one outcome, that the store holds
// exactly one refund per executed outcome and none for anything else, and
// that agents were told what was recorded. told maps action ids to the
// status a completed call reported. With cli the chain is verified by
// `mandate audit verify`, else in process (the race-enabled binary takes
// most of a second to start).
func checkFault(t *testing.T, db *storage.DB, dbPath, storePath string, told map[string]string, cli bool) faultTally {
	t.Helper()
	ctx := context.Background()
	var verified int
	if cli {
		stdout, stderr, err := runMandate(t, faultEnv, "audit", "verify", "--db", dbPath)
		if err != nil {
			t.Fatalf("mandate audit verify: %v\n%s%s", err, stdout, stderr)
		}
		if _, err := fmt.Sscanf(stdout, "unanchored: %d records", &verified); err != nil {
			t.Fatalf("mandate audit verify printed %q, want \"unanchored: N records, head …\"", stdout)
		}
	} else {
		res, err := db.Verify(ctx)
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		verified = int(res.Count)
	}

	tally := faultTally{decisions: map[string]int{}}
	type history struct {
		attempt  *storage.Record
		outcomes []storage.Record
	}
	actions := map[string]*history{}
	var ids []string
	if err := db.Records(ctx, storage.Filter{}, func(r *storage.Record) error {
		tally.records++
		h := actions[r.ActionID]
		switch r.Phase {
		case storage.PhaseAttempt:
			if h != nil {
				return fmt.Errorf("action %s has two attempt records", r.ActionID)
			}
			rec := *r
			actions[r.ActionID] = &history{attempt: &rec}
			ids = append(ids, r.ActionID)
		case storage.PhaseOutcome:
			if h == nil {
				return fmt.Errorf("audit record %d: outcome of %s before its attempt", r.Seq, r.ActionID)
			}
			h.outcomes = append(h.outcomes, *r)
		default:
			return fmt.Errorf("audit record %d: unexpected phase %q", r.Seq, r.Phase)
		}
		return nil
	}); err != nil {
		t.Fatalf("read audit: %v", err)
	}
	if tally.records != verified {
		t.Fatalf("verify checked %d records, the audit has %d", verified, tally.records)
	}

	sdb, err := sql.Open("sqlite", "file:"+storePath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	type refund struct {
		id, order string
		minor     int64
	}
	refunds := map[string]refund{}
	rows, err := sdb.QueryContext(ctx, `SELECT idempotency_key, id, order_id, amount FROM refunds`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var key string
		var r refund
		if err := rows.Scan(&key, &r.id, &r.order, &r.minor); err != nil {
			t.Fatal(err)
		}
		refunds[key] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	var storeRefunded int64
	if err := sdb.QueryRowContext(ctx, `SELECT COALESCE(SUM(refunded), 0) FROM orders`).Scan(&storeRefunded); err != nil {
		t.Fatal(err)
	}

	for _, id := range ids {
		h := actions[id]
		if h.attempt.Tool != "refund_order" || h.attempt.Agent != "senior-bot" {
			t.Fatalf("action %s: %s by %s; this test only refunds as senior-bot", id, h.attempt.Tool, h.attempt.Agent)
		}
		tally.decisions[h.attempt.Decision]++
		act, err := db.Action(ctx, id)
		if err != nil {
			t.Fatalf("action %s: %v", id, err)
		}
		if h.attempt.Decision != policy.Allow {
			if len(h.outcomes) != 0 || (act.Status != storage.StatusPending && act.Status != storage.StatusDenied) {
				t.Fatalf("action %s decided %s: status %s, %d outcomes; want no outcome", id, h.attempt.Decision, act.Status, len(h.outcomes))
			}
		} else if len(h.outcomes) != 1 {
			t.Fatalf("allowed action %s (status %s) has %d outcome records, want exactly 1", id, act.Status, len(h.outcomes))
		}
		if want := told[id]; want != "" && want != storage.StatusExecuting && want != act.Status {
			t.Fatalf("action %s: the agent was told %s, the record says %s", id, want, act.Status)
		}
		r, inStore := refunds[id]
		switch {
		case h.attempt.Decision != policy.Allow:
			if inStore {
				t.Fatalf("action %s was never allowed, but the store has its refund %s", id, r.id)
			}
			continue
		case h.outcomes[0].Outcome != act.Status:
			t.Fatalf("action %s: outcome record %q, action status %q", id, h.outcomes[0].Outcome, act.Status)
		case act.Status == storage.StatusFailed:
			tally.failed++
			if inStore {
				t.Fatalf("action %s is recorded as failed, but the store made its refund %s", id, r.id)
			}
		case act.Status == storage.StatusExecuted:
			tally.executed++
			if !inStore {
				t.Fatalf("action %s is recorded as executed, but the store has no refund with its key", id)
			}
			var args struct {
				OrderID string `json:"order_id"`
				Amount  string `json:"amount"`
			}
			var res struct {
				RefundID string `json:"refund_id"`
				Amount   string `json:"amount"`
			}
			if err := json.Unmarshal(h.attempt.Args, &args); err != nil {
				t.Fatalf("action %s args: %v", id, err)
			}
			if err := json.Unmarshal(act.Result, &res); err != nil {
				t.Fatalf("action %s result %s: %v", id, act.Result, err)
			}
			asked, err := mandate.ParseMoney(args.Amount, "USD")
			if err != nil {
				t.Fatalf("action %s amount: %v", id, err)
			}
			if r.order != args.OrderID || r.minor != asked.Minor || r.id != res.RefundID || res.Amount != args.Amount {
				t.Fatalf("action %s asked %+v and recorded %+v; the store has %+v", id, args, res, r)
			}
			tally.refundedMinor += r.minor
		default:
			t.Fatalf("allowed action %s ended %q, want executed or failed", id, act.Status)
		}
		if strings.Contains(h.outcomes[0].Error, "reconciled") {
			if act.Status == storage.StatusExecuted {
				tally.reconciledDone++
			} else {
				tally.reconciledNot++
			}
		}
	}
	if len(refunds) != tally.executed {
		for key, r := range refunds {
			if h := actions[key]; h == nil || len(h.outcomes) != 1 || h.outcomes[0].Outcome != storage.StatusExecuted {
				t.Fatalf("the store has refund %s (key %q) with no executed outcome in the audit", r.id, key)
			}
		}
	}
	if storeRefunded != tally.refundedMinor {
		t.Fatalf("orders show %d minor units refunded, executed outcomes %d", storeRefunded, tally.refundedMinor)
	}
	// The agent's limit counter holds exactly the executed refunds: what a
	// killed server debited for a refund that never happened is credited
	// back when it is reconciled as failed.
	gdb, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer gdb.Close()
	var counted, n int64
	// Each counter row is a running total: the newest is the whole count.
	if err := gdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(amount_minor), 0), COALESCE(MAX(count), 0) FROM (
			SELECT amount_minor, count FROM usage_totals WHERE scope = ? ORDER BY minute DESC LIMIT 1)`,
		"agent_refunded\x00senior-bot\x00USD").Scan(&counted, &n); err != nil {
		t.Fatal(err)
	}
	if counted != tally.refundedMinor || n != int64(tally.executed) {
		t.Fatalf("senior-bot's refund counter holds %d refunds of %d minor units; executed outcomes are %d of %d", n, counted, tally.executed, tally.refundedMinor)
	}
	return tally
}

// TestKillDuringRefunds kills the server with SIGKILL at a random moment
// in a stream of refunds, faultKills times, restarting it on the same files,
// and checks after each restart that every refund was done once or not at
// all and that the audit says which.
func TestKillDuringRefunds(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the server many times")
	}
	dir := t.TempDir()
	dbPath, storePath, shop := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db"), filepath.Join(dir, "shop.json")
	faultShop(t, shop)
	if _, stderr, err := runMandate(t, nil, "store", "import", "--store", storePath, shop); err != nil {
		t.Fatalf("store import: %v\n%s", err, stderr)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("random kill times from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var (
		mu    sync.Mutex
		told  = map[string]string{} // action id → status the agent was told
		calls atomic.Int64
		next  atomic.Int64
	)
	stream := func(ctx context.Context, c *client.Client) {
		for ctx.Err() == nil {
			i := next.Add(1)
			res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order", Arguments: map[string]any{
				"order_id": fmt.Sprintf("ord_f%03d", i%faultOrders),
				"amount":   fmt.Sprintf("1.%02d", i%100),
				"reason":   "fault test",
			}}})
			if err != nil {
				return // the server is gone
			}
			calls.Add(1)
			var got actionResult
			b, _ := json.Marshal(res.StructuredContent)
			if res.StructuredContent == nil || json.Unmarshal(b, &got) != nil || got.ActionID == "" {
				t.Errorf("refund %d: no action result: %s", i, text(res))
				return
			}
			mu.Lock()
			told[got.ActionID] = got.Status
			mu.Unlock()
		}
	}

	var total faultTally
	for kill := 0; kill <= faultKills; kill++ {
		srv := startFaultServer(t, dbPath, storePath)
		settle(t, db)
		mu.Lock()
		total = checkFault(t, db, dbPath, storePath, told, kill%4 == 0 || kill == faultKills)
		mu.Unlock()
		if kill == faultKills {
			// The last one is shut down, not killed, and must exit cleanly.
			if err := srv.c.Close(); err != nil {
				t.Fatalf("mandate serve did not exit cleanly when its client hung up: %v\nstderr:\n%s", err, srv.stderr.String())
			}
			srv.checkRace(t)
			break
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range faultStreams {
			wg.Go(func() { stream(ctx, srv.c) })
		}
		time.Sleep(time.Duration(5+rng.IntN(146)) * time.Millisecond)
		srv.kill(t)
		cancel()
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d kills, %d calls answered, %d audit records; decisions %v; %d executed, %d failed; reconciled after a kill: %d done, %d not done",
		faultKills, calls.Load(), total.records, total.decisions, total.executed, total.failed, total.reconciledDone, total.reconciledNot)
	if total.decisions[policy.Allow] == 0 || total.executed == 0 {
		t.Fatalf("decisions %v, %d executed: the stream made no refunds to check", total.decisions, total.executed)
	}
	if total.reconciledDone+total.reconciledNot == 0 {
		t.Fatalf("no kill caught a refund between its attempt and its outcome, so recovery was never exercised")
	}
}
