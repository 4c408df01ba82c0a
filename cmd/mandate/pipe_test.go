package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPipedScriptRuns: a script that pipes its calls into `mandate serve`
// and closes stdin at once has cancelled nothing. mcp-go ends every request
// context when stdin reaches EOF; the calls still run to their end and are
// answered (only notifications/cancelled cancels a call).
func TestPipedScriptRuns(t *testing.T) {
	dir := t.TempDir()
	var script strings.Builder
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"30.00","reason":"piped"}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"cancel_order","arguments":{"order_id":"ord_1004","reason":"piped"}}}`,
	} {
		script.WriteString(line + "\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--agent", "demo-agent", "--db", filepath.Join(dir, "mandate.db"), "--store", filepath.Join(dir, "store.db"))
	cmd.Env = childEnv(nil)
	cmd.Stdin = strings.NewReader(script.String())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("serve: %v\n%s", err, errOut.String())
	}
	got := map[float64]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var msg struct {
			ID     float64 `json:"id"`
			Result struct {
				Structured struct {
					Status string `json:"status"`
				} `json:"structuredContent"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		got[msg.ID] = msg.Result.Structured.Status
	}
	if got[2] != "executed" || got[3] != "executed" {
		t.Fatalf("statuses %v, want the refund (2) and the cancellation (3) executed\nstdout:\n%s\nstderr:\n%s", got, out.String(), errOut.String())
	}
}
