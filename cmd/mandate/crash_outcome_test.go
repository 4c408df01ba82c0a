package main

// A crash at the one moment the deferred outcome record is about: the
// backend has made the refund, the outcome is not yet recorded. The binary is
// built with the mandate_faultinject tag, and MANDATE_FAULT=before-outcome
// makes it SIGKILL itself there (storage/faultinject.go). A server restarted
// on the same files must find the action executing, ask the store by its
// idempotency key, and record that it was done: one outcome, one refund.

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// buildFaultBinary builds mandate with the fault-injection tag, with -race
// when the tests run with it.
func buildFaultBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "mandate-faultinject")
	args := []string{"build", "-tags", "mandate_faultinject", "-o", out}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	build := exec.Command("go", append(args, "./cmd/mandate")...)
	build.Dir = filepath.Join("..", "..")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags mandate_faultinject: %v\n%s", err, b)
	}
	return out
}

func TestCrashAfterBackendBeforeOutcome(t *testing.T) {
	faultBin := buildFaultBinary(t)
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")

	// A server that dies as the outcome of its first action is about to be
	// recorded. ord_1002 (demo data) is 2500.00 USD, delivered, to an old
	// account: senior-bot may refund 25.00 of it without approval.
	stderr := &syncBuffer{}
	var cmd *exec.Cmd
	c, err := client.NewStdioMCPClientWithOptions(faultBin, append(faultEnv, "MANDATE_FAULT=before-outcome"),
		[]string{"serve", "--agent", "senior-bot", "--db", dbPath, "--store", storePath},
		transport.WithCommandFunc(func(ctx context.Context, command string, env, args []string) (*exec.Cmd, error) {
			cmd = exec.CommandContext(ctx, command, args...)
			cmd.Env = childEnv(env)
			cmd.Stderr = stderr
			return cmd, nil
		}))
	if err != nil {
		t.Fatalf("start mandate serve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "mandate-crash", Version: "test"}
	if _, err := c.Initialize(ctx, init); err != nil {
		c.Close()
		t.Fatalf("initialize: %v\nstderr:\n%s", err, stderr.String())
	}
	callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
	res, err := c.CallTool(callCtx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_1002", "amount": "25.00", "reason": "Arrived damaged."}}})
	callCancel()
	if err == nil {
		t.Fatalf("refund_order answered %+v; the server should have died before it could", res)
	}
	werr := c.Close()
	var exit *exec.ExitError
	if !errors.As(werr, &exit) {
		t.Fatalf("server exit: %v, want SIGKILL\nstderr:\n%s", werr, stderr.String())
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("server ended with %v, want SIGKILL at the fault point\nstderr:\n%s", werr, stderr.String())
	}

	// What the dead server left: an action executing, an attempt without an
	// outcome, and the store's refund made under the action's id.
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	left, err := db.ActionsWithStatus(context.Background(), storage.StatusExecuting, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Tool != "refund_order" {
		t.Fatalf("after the crash %d actions are executing (%v), want the one refund", len(left), left)
	}
	id := left[0].ID
	phases := func() []string {
		var out []string
		if err := db.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
			out = append(out, r.Phase+":"+r.Outcome)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := phases(); len(got) != 1 || got[0] != "attempt:" {
		t.Fatalf("audit of %s after the crash: %v, want only the attempt", id, got)
	}
	st, err := store.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.RefundByKey(context.Background(), id)
	st.Close()
	if err != nil || r.Amount.Minor != 2500 {
		t.Fatalf("store refund under %s: %+v, %v; want the 25.00 the backend made before the crash", id, r, err)
	}

	// A normal server on the same files reconciles it.
	s := startFaultServer(t, dbPath, storePath)
	settle(t, db)
	s.c.Close()
	s.checkRace(t)
	a, err := db.Action(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != storage.StatusExecuted {
		t.Fatalf("after recovery %s is %s, want executed", id, a.Status)
	}
	if got := phases(); len(got) != 2 || got[1] != "outcome:executed" {
		t.Fatalf("audit of %s after recovery: %v, want the attempt and one executed outcome", id, got)
	}
	// What changed is recorded as far as recovery can know it: the refund
	// and the order's totals now, the values before as unknown.
	if err := db.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
		if r.Phase != storage.PhaseOutcome {
			return nil
		}
		c, err := storage.ParseChanges(r.Changes)
		if err != nil || c == nil || c.Source != storage.ChangesReconciled || c.RefundID == "" || c.CustomerID != "cus_ada" ||
			len(c.Fields) != 2 || string(c.Fields[0].Before) != "null" || string(c.Fields[0].After) != `{"minor":2500,"currency":"USD"}` {
			t.Fatalf("reconciled outcome changes %s (%v), want the refund with before unknown", r.Changes, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Verify(context.Background()); err != nil {
		t.Fatalf("audit chain after the crash and recovery: %v", err)
	}
	st, err = store.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if o, err := st.Order(context.Background(), "ord_1002"); err != nil || o.Refunded.Minor != 2500 {
		t.Fatalf("ord_1002 after recovery: refunded %v, %v; want exactly the one 25.00 refund", o.Refunded, err)
	}
}
