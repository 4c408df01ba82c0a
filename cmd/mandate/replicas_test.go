package main

// Replicas on PostgreSQL (issue 12): three `mandate serve` processes, the
// built binary over stdio, share one PostgreSQL database as replicas on
// several machines would (and one store file, the system of record). Every
// guarantee must hold across them: a refund race on one order, a limit
// window, idempotency keys, an approval raced from two processes, recovery
// after a replica is killed with SIGKILL, and one audit chain that verifies
// and catches tampering. The replicas connect as an application role that
// may only insert into the audit table, set up as docs/scaling.md says.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate/internal/pgtest"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// appRoleSQL is the owner/application role split of docs/scaling.md: the
// role Mandate runs as reads and writes its state but may only insert into
// the append-only tables, and does not own them, so it can neither change a
// record nor switch the triggers off.
const appRoleSQL = `
CREATE ROLE mandate_app LOGIN;
GRANT USAGE ON SCHEMA public TO mandate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO mandate_app;
REVOKE UPDATE, DELETE, TRUNCATE ON audit, policy_loads, policy_texts, rates_loads, migrations FROM mandate_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_keys FROM mandate_app;
REVOKE INSERT ON migrations FROM mandate_app;
REVOKE DELETE, TRUNCATE ON chain_head FROM mandate_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO mandate_app;
`

// TestGrantsMatchDocs: the grants README.md and docs/scaling.md tell an
// operator to run are the ones the replicas test runs; a line missing from
// one of them (the audit_keys REVOKE once was) would leave the trail
// writable through a view.
func TestGrantsMatchDocs(t *testing.T) {
	want := strings.TrimPrefix(strings.TrimSpace(appRoleSQL), "CREATE ROLE mandate_app LOGIN;\n")
	for _, doc := range []string{"README.md", "docs/scaling.md"} {
		b, err := os.ReadFile(filepath.Join("..", "..", doc))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		start := strings.Index(text, "GRANT USAGE ON SCHEMA public TO mandate_app;")
		if start < 0 {
			t.Fatalf("%s: no grants block", doc)
		}
		end := strings.Index(text[start:], "\nSQL\n")
		if end < 0 {
			t.Fatalf("%s: the grants block does not end with SQL", doc)
		}
		if got := text[start : start+end]; got != want {
			t.Errorf("%s grants:\n%s\nwant (as replicas_test.go runs them):\n%s", doc, got, want)
		}
	}
}

// replicaShop is the import file: old customers (so only amounts and limits
// decide), each with one order.
func replicaShop(t *testing.T, path string, orders map[string]string) {
	t.Helper()
	type rec = map[string]string
	var f struct {
		Customers []rec `json:"customers"`
		Orders    []rec `json:"orders"`
	}
	for id, total := range orders {
		c := "cus_" + strings.TrimPrefix(id, "ord_")
		f.Customers = append(f.Customers, rec{"id": c, "name": "Replica " + c, "email": c + "@example.com", "created_at": "2020-01-01T00:00:00Z"})
		f.Orders = append(f.Orders, rec{"id": id, "customer_id": c, "status": "delivered", "currency": "USD", "total": total, "created_at": "2026-01-01T00:00:00Z"})
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// refundOn calls refund_order on c and returns the action result, or an
// error when the call itself failed; safe from any goroutine.
func refundOn(c *client.Client, args map[string]any) (actionResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order", Arguments: args}})
	if err != nil {
		return actionResult{}, err
	}
	var out actionResult
	b, _ := json.Marshal(res.StructuredContent)
	if res.StructuredContent == nil || json.Unmarshal(b, &out) != nil || out.ActionID == "" {
		return out, fmt.Errorf("no action result: %s", text(res))
	}
	return out, nil
}

func TestPostgresReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and several servers")
	}
	cl := pgtest.Get(t)
	ctx := context.Background()
	ownerURL := pgtest.URL(t)
	dir := t.TempDir()
	storePath, shop := filepath.Join(dir, "store.db"), filepath.Join(dir, "shop.json")
	orders := map[string]string{"ord_one": "40.00", "ord_idem": "1000.00", "ord_appr": "1000.00", "ord_kill": "1000.00"}
	for i := range 30 {
		orders[fmt.Sprintf("ord_w%02d", i)] = "100.00"
	}
	for i := range 40 {
		orders[fmt.Sprintf("ord_s%02d", i)] = "100000.00"
	}
	replicaShop(t, shop, orders)
	if _, stderr, err := runMandate(t, nil, "store", "import", "--store", storePath, shop); err != nil {
		t.Fatalf("store import: %v\n%s", err, stderr)
	}

	// The owner creates the schema (any command opening the database as
	// the owner does), then the application role is set up.
	owner, err := storage.Open(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	cl.Exec(t, ownerURL, appRoleSQL)
	appURL := strings.Replace(ownerURL, "postgres://postgres@", "postgres://mandate_app@", 1)
	for _, s := range []string{`UPDATE audit SET agent = 'x'`, `DELETE FROM audit`, `ALTER TABLE audit DISABLE TRIGGER audit_no_update`,
		`UPDATE audit_keys SET agent = 'x'`, `DELETE FROM audit_keys`} {
		if err := pgtest.Exec(appURL, s); err == nil || !strings.Contains(err.Error(), "permission denied") && !strings.Contains(err.Error(), "must be owner") {
			t.Fatalf("%s as the application role: %v, want it refused", s, err)
		}
	}

	args := []string{"--db", appURL, "--store", storePath, "--recover-after", "2s", "--backend-timeout", "500ms"}
	var replicas []*client.Client
	for range 3 {
		replicas = append(replicas, startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AGENT=demo-agent"}, args...))
	}

	t.Run("idempotency key dedupes across replicas", func(t *testing.T) {
		var wg sync.WaitGroup
		ids := make([]string, 9)
		errs := make([]error, 9)
		for i := range ids {
			wg.Go(func() {
				r, err := refundOn(replicas[i%3], map[string]any{"order_id": "ord_idem", "amount": "10.00", "reason": "replica test", "idempotency_key": "replica-key-1"})
				ids[i], errs[i] = r.ActionID, err
			})
		}
		wg.Wait()
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("call %d: action %q, %v; want every call answered with action %q", i, ids[i], errs[i], ids[0])
			}
		}
		if o := getOrder(t, replicas[0], "ord_idem"); o.Refunded != "10.00" {
			t.Fatalf("ord_idem refunded %s after 9 calls with one key, want 10.00 once", o.Refunded)
		}
	})

	t.Run("an approval raced from two processes executes once", func(t *testing.T) {
		r, err := refundOn(replicas[2], map[string]any{"order_id": "ord_appr", "amount": "150.00", "reason": "needs a person"})
		if err != nil || r.Status != storage.StatusPending {
			t.Fatalf("refund of 150.00: %+v, %v; want pending", r, err)
		}
		addUsers(t, ownerURL, "alice", "bob")
		env := []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword}
		var wg sync.WaitGroup
		outs := make([]error, 2)
		for i, who := range []string{"alice", "bob"} {
			wg.Go(func() {
				_, _, outs[i] = runMandate(t, env, "approvals", "approve", r.ActionID, "--as", who, "--db", appURL, "--store", storePath)
			})
		}
		wg.Wait()
		if (outs[0] == nil) == (outs[1] == nil) {
			t.Fatalf("approvals: alice %v, bob %v; want exactly one to succeed", outs[0], outs[1])
		}
		if o := getOrder(t, replicas[0], "ord_appr"); o.Refunded != "150.00" {
			t.Fatalf("ord_appr refunded %s, want 150.00 once", o.Refunded)
		}
		if n := outcomes(t, owner, r.ActionID); n != 1 {
			t.Fatalf("%d outcome records for the approved action, want 1", n)
		}
	})

	t.Run("100 parallel refunds on one order never exceed what was paid", func(t *testing.T) {
		var wg sync.WaitGroup
		res := make([]actionResult, 100)
		errs := make([]error, 100)
		for i := range res {
			wg.Go(func() {
				res[i], errs[i] = refundOn(replicas[i%3], map[string]any{"order_id": "ord_one", "amount": fmt.Sprintf("%d.00", 25+i%6), "reason": "replica race"})
			})
		}
		wg.Wait()
		executed := 0
		for i, r := range res {
			if errs[i] != nil {
				t.Fatalf("refund %d: %v", i, errs[i])
			}
			if r.Status == storage.StatusExecuted {
				executed++
			}
		}
		// Any two refunds of 25.00 to 30.00 exceed 40.00.
		if o := getOrder(t, replicas[1], "ord_one"); executed != 1 || o.Refunded < "25.00" || o.Refunded > "30.00" {
			t.Fatalf("%d refunds executed, order refunded %s of 40.00; want exactly one refund of 25.00 to 30.00", executed, o.Refunded)
		}
	})

	t.Run("a 500.00 window admits exactly what fits", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Go(func() {
				if _, err := refundOn(replicas[i%3], map[string]any{"order_id": fmt.Sprintf("ord_w%02d", i), "amount": "50.00", "reason": "window"}); err != nil {
					t.Errorf("refund %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		// Each replica answers before its outcome record commits (a
		// write-behind, storage/behind.go): another process, like this
		// one, sees the refunds executed a moment later.
		settle(t, owner)
		// Everything demo-agent has had executed in the window, over every
		// replica: within 500.00, and with no room left for one more 50.00.
		acts, err := owner.Actions(ctx, storage.ActionFilter{Agent: "demo-agent", Tool: "refund_order", Status: storage.StatusExecuted, Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		window := 0
		for _, a := range acts {
			total += a.AmountMinor
			if strings.Contains(string(a.Args), "ord_w") {
				window++
			}
		}
		if total > 50000 || total+5000 <= 50000 || window == 0 {
			t.Fatalf("demo-agent's executed refunds add up to %d minor units (%d in this burst), want at most 50000 with less than 5000 left", total, window)
		}
	})

	t.Run("a replica killed with SIGKILL is recovered by another, once", func(t *testing.T) {
		// A fourth replica, built with fault injection, kills itself with
		// SIGKILL after the store made its refund and before the outcome
		// is recorded: the action is left executing.
		faultBin := buildFaultBinary(t)
		stderr := &syncBuffer{}
		var cmd *exec.Cmd
		c, err := client.NewStdioMCPClientWithOptions(faultBin, append(faultEnv, "MANDATE_FAULT=before-outcome"),
			append([]string{"serve", "--agent", "senior-bot"}, args...),
			transport.WithCommandFunc(func(ctx context.Context, command string, env, args []string) (*exec.Cmd, error) {
				cmd = exec.CommandContext(ctx, command, args...)
				cmd.Env = childEnv(env)
				cmd.Stderr = stderr
				return cmd, nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		init := mcp.InitializeRequest{}
		init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
		init.Params.ClientInfo = mcp.Implementation{Name: "mandate-replica", Version: "test"}
		if _, err := c.Initialize(ictx, init); err != nil {
			c.Close()
			t.Fatalf("initialize: %v\nstderr:\n%s", err, stderr.String())
		}
		if r, err := refundOn(c, map[string]any{"order_id": "ord_kill", "amount": "25.00", "reason": "killed mid-call"}); err == nil {
			t.Fatalf("the faulty replica answered %+v; it should have died first", r)
		}
		werr := c.Close()
		var exit *exec.ExitError
		if !errors.As(werr, &exit) {
			t.Fatalf("faulty replica: %v, want SIGKILL\nstderr:\n%s", werr, stderr.String())
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("faulty replica ended with %v, want SIGKILL\nstderr:\n%s", werr, stderr.String())
		}
		left, err := owner.ActionsWithStatus(ctx, storage.StatusExecuting, 10)
		if err != nil || len(left) != 1 {
			t.Fatalf("after the kill: %d actions executing, %v; want the one refund", len(left), err)
		}
		id := left[0].ID
		// The three live replicas all run recovery; after --recover-after
		// one of them records the outcome, and only one.
		deadline := time.Now().Add(30 * time.Second)
		for {
			a, err := owner.Action(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if a.Status == storage.StatusExecuted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("action %s still %s 30s after the kill", id, a.Status)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(3 * time.Second) // every replica has had another recovery pass
		if n := outcomes(t, owner, id); n != 1 {
			t.Fatalf("%d outcome records for the recovered action, want exactly 1", n)
		}
		if o := getOrder(t, replicas[0], "ord_kill"); o.Refunded != "25.00" {
			t.Fatalf("ord_kill refunded %s, want 25.00 once", o.Refunded)
		}
	})

	t.Run("a replica killed mid-stream: everything it left executing is reconciled once", func(t *testing.T) {
		victim := startFaultServer(t, appURL, storePath) // senior-bot, on the same database
		ctx, cancel := context.WithCancel(ctx)
		var next, answered atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					i := next.Add(1)
					if _, err := refundOn(victim.c, map[string]any{"order_id": fmt.Sprintf("ord_s%02d", i%40), "amount": fmt.Sprintf("1.%02d", i%100), "reason": "stream"}); err != nil {
						return // killed
					}
					answered.Add(1)
				}
			})
		}
		// Killed mid-stream: once some refunds were answered (a race build
		// on a loaded machine may take seconds for the first), and while
		// more are in flight.
		for start := time.Now(); answered.Load() < 3 && time.Since(start) < 30*time.Second; {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		victim.kill(t)
		cancel()
		wg.Wait()
		// The three live replicas reconcile what it left executing.
		deadline := time.Now().Add(30 * time.Second)
		for {
			left, err := owner.ActionsWithStatus(context.Background(), storage.StatusExecuting, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d actions still executing 30s after the kill", len(left))
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(3 * time.Second) // every replica has had another recovery pass
		acts, err := owner.Actions(context.Background(), storage.ActionFilter{Agent: "senior-bot", Tool: "refund_order", Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		sdb, err := sql.Open("sqlite", "file:"+storePath+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		executed := 0
		for _, a := range acts {
			if !strings.Contains(string(a.Args), "ord_s") {
				continue
			}
			var inStore int
			if err := sdb.QueryRow(`SELECT COUNT(*) FROM refunds WHERE idempotency_key = ?`, a.ID).Scan(&inStore); err != nil {
				t.Fatal(err)
			}
			n := outcomes(t, owner, a.ID)
			switch a.Status {
			case storage.StatusExecuted:
				executed++
				if n != 1 || inStore != 1 {
					t.Fatalf("executed action %s: %d outcome records, %d store refunds; want 1 and 1", a.ID, n, inStore)
				}
			case storage.StatusFailed:
				if n != 1 || inStore != 0 {
					t.Fatalf("failed action %s: %d outcome records, %d store refunds; want 1 and 0", a.ID, n, inStore)
				}
			default:
				if n != 0 || inStore != 0 {
					t.Fatalf("%s action %s: %d outcome records, %d store refunds; want none", a.Status, a.ID, n, inStore)
				}
			}
		}
		if executed == 0 {
			t.Fatalf("the stream made no refund before the kill")
		}
		t.Logf("%d refunds executed by the killed replica's stream (reconciled ones included)", executed)
	})

	// One chain over every replica's records; the CLI verifies it, and
	// catches an edit made by the owner with the triggers off.
	if stdout, stderr, err := runMandate(t, nil, "audit", "verify", "--db", appURL); err != nil || !strings.Contains(stdout, " records, head ") || !strings.Contains(stdout, "actions agree with the trail") {
		t.Fatalf("mandate audit verify: %v\n%s%s", err, stdout, stderr)
	}
	cl.Exec(t, ownerURL, `SET session_replication_role = replica; UPDATE audit SET args = '{"order_id":"ord_one","amount":"1.00"}' WHERE seq = 5`)
	if stdout, stderr, err := runMandate(t, nil, "audit", "verify", "--db", appURL); err == nil || !strings.Contains(stdout+stderr, "broken: record 5: edited") {
		t.Fatalf("mandate audit verify after an edit: %v\n%s%s; want it to fail at record 5", err, stdout, stderr)
	}
}

// outcomes counts the outcome records of action id.
func outcomes(t *testing.T, db *storage.DB, id string) int {
	t.Helper()
	n := 0
	if err := db.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
		if r.Phase == storage.PhaseOutcome {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStorageMigrate moves a SQLite trail into PostgreSQL with the CLI:
// the command verifies both ends and `audit verify` then passes on the copy;
// running it again into the same database is refused and changes nothing.
func TestStorageMigrate(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "mandate.db")
	db, err := storage.Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := db.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "get_order", Args: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%d"}`, i)), Phase: storage.PhaseAttempt}); err != nil {
			t.Fatal(err)
		}
	}
	_, head, _ := db.Head(ctx)
	db.Close()
	url := pgtest.URL(t)
	if _, err := runCLI(t, "", "storage", "migrate", "--from", file); err == nil {
		t.Fatal("storage migrate without --to succeeded")
	} else if _, ok := err.(usageError); !ok {
		t.Fatalf("storage migrate without --to: %v, want a usage error", err)
	}
	out, err := runCLI(t, "", "storage", "migrate", "--from", file, "--to", url)
	if err != nil || !strings.Contains(out, "ok: 3 audit records") || !strings.Contains(out, head) {
		t.Fatalf("storage migrate: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "", "audit", "verify", "--db", url); err != nil || !strings.Contains(out, ": 3 records, head ") {
		t.Fatalf("audit verify on the copy: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "", "storage", "migrate", "--from", file, "--to", url); err == nil || !strings.Contains(out+err.Error(), "not empty") {
		t.Fatalf("storage migrate into a used database: %v\n%s", err, out)
	}
}

// TestStorageMigrateKeyed moves a trail written with an audit key into
// PostgreSQL and back. Without the key the copy is refused before anything
// is written (the keyed records cannot be verified); with it (--audit-key,
// or MANDATE_AUDIT_KEY) both ends verify intact, and the destination goes
// on appending keyed records.
func TestStorageMigrateKeyed(t *testing.T) {
	pgtest.Get(t)
	t.Setenv("MANDATE_AUDIT_KEY", "")
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "audit.key")
	if out, err := runCLI(t, "", "audit", "mackey", "--out", key); err != nil {
		t.Fatalf("audit mackey: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "mandate.db")
	db, err := storage.Open(ctx, file, storage.AuditKeyFile(key))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := db.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "get_order", Args: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%d"}`, i)), Phase: storage.PhaseAttempt}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	url := pgtest.URL(t)
	if out, err := runCLI(t, "", "storage", "migrate", "--from", file, "--to", url); err == nil || !strings.Contains(out+err.Error(), "--audit-key") {
		t.Fatalf("storage migrate of a keyed trail without the key: %v\n%s, want a refusal naming --audit-key", err, out)
	}
	out, err := runCLI(t, "", "storage", "migrate", "--audit-key", key, "--from", file, "--to", url)
	if err != nil || !strings.Contains(out, "ok: 3 audit records") {
		t.Fatalf("storage migrate --audit-key: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "", "audit", "verify", "--audit-key", key, "--db", url); err != nil || !strings.HasPrefix(out, "intact (keyed from seq 1): 3 records") {
		t.Fatalf("audit verify on the PostgreSQL copy: %v\n%s", err, out)
	}
	// The copy continues keyed.
	pg, err := storage.Open(ctx, url, storage.AuditKeyFile(key))
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "get_order", Phase: storage.PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	pg.Close()
	// And back, with the key from the environment.
	t.Setenv("MANDATE_AUDIT_KEY", key)
	back := filepath.Join(dir, "back.db")
	if out, err := runCLI(t, "", "storage", "migrate", "--from", url, "--to", back); err != nil || !strings.Contains(out, "ok: 4 audit records") {
		t.Fatalf("storage migrate back with MANDATE_AUDIT_KEY: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "", "audit", "verify", "--db", back); err != nil || !strings.HasPrefix(out, "intact (keyed from seq 1): 4 records") {
		t.Fatalf("audit verify on the SQLite copy: %v\n%s", err, out)
	}
}

// cliDB is the database a CLI or end-to-end test uses: path on SQLite;
// under TestPostgresCLI a fresh PostgreSQL database, so that the same tests
// run on both engines.
func cliDB(t *testing.T, path string) string {
	t.Helper()
	if strings.HasPrefix(t.Name(), "TestPostgresCLI/") {
		return pgtest.URL(t)
	}
	return path
}

// TestPostgresCLI runs the end-to-end test (two agents' servers over stdio),
// the approval CLI and live-policy tests and the admin server's on
// PostgreSQL (each test's database comes from cliDB). Tests that tamper
// with a SQLite file directly have their PostgreSQL counterparts in
// storage's TestPGAuditAppendOnly and in TestPostgresReplicas.
func TestPostgresCLI(t *testing.T) {
	pgtest.Get(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Serve", TestServe},
		{"ApprovalsCLI", TestApprovalsCLI},
		{"ApprovalsCLIRefusesStalePolicy", TestApprovalsCLIRefusesStalePolicy},
		{"ApprovalsCLIRolesFromTheLivePolicy", TestApprovalsCLIRolesFromTheLivePolicy},
		{"ApprovalsCLIEmergencyDeny", TestApprovalsCLIEmergencyDeny},
		{"AuditExportApproverAndComment", TestAuditExportApproverAndComment},
		{"AdminServesTLS", TestAdminServesTLS},
	} {
		t.Run(tc.name, tc.fn)
	}
}
