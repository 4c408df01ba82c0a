package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
)

// pipeServe pipes script into `mandate serve --agent demo-agent` (with
// flags added, on fresh databases) and closes stdin, as a script does; it
// fails the test unless serve exits 0, and returns what serve wrote and
// how long it ran.
func pipeServe(t *testing.T, script string, flags ...string) (stdout, stderr string, took time.Duration) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	args := append([]string{"serve", "--agent", "demo-agent", "--db", filepath.Join(dir, "mandate.db"), "--store", filepath.Join(dir, "store.db")}, flags...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(nil)
	cmd.Stdin = strings.NewReader(script)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("serve: %v\n%s", err, errOut.String())
	}
	return out.String(), errOut.String(), time.Since(start)
}

// pipedStatuses reads serve's stdout, one JSON-RPC message per line, and
// returns each answer's action status (structuredContent.status, "" for an
// answer without one) by its id as written ("2", "\"call-2\"").
func pipedStatuses(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Result struct {
				Structured struct {
					Status string `json:"status"`
				} `json:"structuredContent"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		got[string(msg.ID)] = msg.Result.Structured.Status
	}
	return got
}

// TestPipedScriptRuns: a script that pipes its calls into `mandate serve`
// and closes stdin at once has cancelled nothing. mcp-go ends every request
// context when stdin reaches EOF; the calls still run to their end and are
// answered (only notifications/cancelled cancels a call).
func TestPipedScriptRuns(t *testing.T) {
	var script strings.Builder
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"30.00","reason":"piped"}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"cancel_order","arguments":{"order_id":"ord_1004","reason":"piped"}}}`,
	} {
		script.WriteString(line + "\n")
	}
	out, errOut, _ := pipeServe(t, script.String())
	got := pipedStatuses(t, out)
	if got["2"] != "executed" || got["3"] != "executed" {
		t.Fatalf("statuses %v, want the refund (2) and the cancellation (3) executed\nstdout:\n%s\nstderr:\n%s", got, out, errOut)
	}
}

// TestPipedScriptManyCallsAllAnswered: a script of more calls than serve
// has workers, piped in at once. mcp-go ends its workers when the input
// ends and drops the calls still queued, so serve holds the end of input
// back until every tools/call read has been answered: each of the 200 is
// answered with its action's status (executed; pending once the
// customer's refunds need a person; denied past the pending cap), none
// dropped.
func TestPipedScriptManyCallsAllAnswered(t *testing.T) {
	const n = 200
	var script strings.Builder
	script.WriteString(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}` + "\n")
	script.WriteString(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
	for i := 1; i <= n; i++ {
		id := strconv.Itoa(i)
		if i%2 == 0 {
			id = `"call-` + id + `"` // string ids too, spaced as a client may
		}
		fmt.Fprintf(&script, `{"jsonrpc":"2.0","id": %s,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"0.01","reason":"piped %d"}}}`+"\n", id, i)
	}
	out, errOut, _ := pipeServe(t, script.String())
	statuses := pipedStatuses(t, out)
	var missing []int
	for i := 1; i <= n; i++ {
		id := strconv.Itoa(i)
		if i%2 == 0 {
			id = `"call-` + id + `"`
		}
		if statuses[id] == "" {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d piped calls not answered with a status after stdin closed (ids %v)\nstderr:\n%s", len(missing), n, missing, errOut)
	}
}

// TestServeExitsNonZeroWhenAnOutcomeIsNotRecorded: the agent is answered
// before its outcome record commits; if that commit fails (here a trigger
// refuses outcome records), the action stays executing for recovery and
// the log says so, and serve's exit status says so too, so that a
// supervisor does not take the stop for a clean one.
func TestServeExitsNonZeroWhenAnOutcomeIsNotRecorded(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := sql.Open("sqlite", storage.DSN(dbPath))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TRIGGER test_refuse_outcomes BEFORE INSERT ON audit WHEN NEW.phase = 'outcome'
		BEGIN SELECT RAISE(ABORT, 'outcome records refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	script := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}` + "\n" +
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n" +
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"30.00","reason":"piped"}}}` + "\n"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--agent", "demo-agent", "--db", dbPath, "--store", filepath.Join(dir, "store.db"))
	cmd.Env = childEnv(nil)
	cmd.Stdin = strings.NewReader(script)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("serve exited with %v, want status 1\nstderr:\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), `"status":"executed"`) {
		t.Fatalf("the refund was not answered executed (the store made it):\n%s", out.String())
	}
	for _, want := range []string{"could not be committed", "1 audit record(s) written behind an answer could not be committed"} {
		if !strings.Contains(errOut.String(), want) {
			t.Fatalf("stderr does not say %q:\n%s", want, errOut.String())
		}
	}
}
