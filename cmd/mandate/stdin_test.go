package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServePipedRequests: a scripted client writes its requests and closes
// stdin at once. Closing stdin cancels the calls in flight, but a started
// call still runs to its end and is answered: nothing is half-done.
func TestServePipedRequests(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"30.00","reason":"scratched"}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1002","amount":"150.00","reason":"late"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1002","amount":"900.00","reason":"unhappy"}}}`,
	}
	cmd := exec.Command(bin, "serve", "--agent", "demo-agent", "--db", filepath.Join(dir, "mandate.db"), "--store", filepath.Join(dir, "store.db"))
	cmd.Env = childEnv(nil)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("serve: %v\n%s", err, errOut.String())
	}
	want := map[float64]string{2: "allow", 3: "require_approval", 4: "deny"}
	got := map[float64]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var msg struct {
			ID     float64 `json:"id"`
			Result struct {
				StructuredContent struct {
					Decision string `json:"decision"`
				} `json:"structuredContent"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			t.Fatalf("stdout line is not JSON-RPC: %q", line)
		}
		if msg.ID >= 2 {
			got[msg.ID] = msg.Result.StructuredContent.Decision
		}
	}
	for id, d := range want {
		if got[id] != d {
			t.Fatalf("request %v: decision %q, want %q\nstdout:\n%s\nstderr:\n%s", id, got[id], d, out.String(), errOut.String())
		}
	}
}
