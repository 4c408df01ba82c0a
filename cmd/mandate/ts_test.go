package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tsCall is one tool call as the TypeScript SDK saw it (client.mjs).
type tsCall struct {
	IsError    bool            `json:"isError"`
	Structured json.RawMessage `json:"structured"`
	Text       string          `json:"text"`
	Thrown     string          `json:"thrown"`
}

// TestTypeScriptSDK drives the built binary with the official MCP TypeScript
// SDK (cmd/mandate/testdata/tsclient, versions pinned by its lockfile), a
// client written by other people than ours, which validates every
// structured result against the tool's outputSchema. It needs Node and npm;
// without them it is skipped, unless MANDATE_REQUIRE_NODE=1 (set by .ci/run)
// makes that a failure.
func TestTypeScriptSDK(t *testing.T) {
	node, clientDir := tsClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, node, filepath.Join(clientDir, "client.mjs"), bin, dir)
	cmd.Dir = clientDir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the TypeScript client failed: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var got struct {
		Server struct {
			Name string `json:"name"`
		} `json:"server"`
		Tools map[string]struct {
			Annotations     map[string]any `json:"annotations"`
			HasOutputSchema bool           `json:"hasOutputSchema"`
		} `json:"tools"`
		Calls map[string]tsCall `json:"calls"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("reading the client's report: %v\n%s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if got.Server.Name != "mandate" {
		t.Errorf("serverInfo.name = %q, want mandate", got.Server.Name)
	}
	for _, name := range append(append([]string{}, lookupTools...), actionTools...) {
		tool, ok := got.Tools[name]
		if !ok {
			t.Errorf("tools/list lacks %s", name)
			continue
		}
		for _, hint := range []string{"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"} {
			if _, ok := tool.Annotations[hint]; !ok {
				t.Errorf("%s: annotation %s not set", name, hint)
			}
		}
	}
	for label, c := range got.Calls {
		if c.Thrown != "" {
			t.Errorf("%s: the TypeScript SDK threw (a result it could not accept): %s", label, c.Thrown)
		}
	}

	action := func(label string) actionResult {
		t.Helper()
		var r actionResult
		c := got.Calls[label]
		if err := json.Unmarshal(c.Structured, &r); err != nil || r.ActionID == "" {
			if c.IsError && c.Text != "" {
				_ = json.Unmarshal([]byte(c.Text), &r)
			}
		}
		return r
	}
	var order orderView
	if err := json.Unmarshal(got.Calls["get_order"].Structured, &order); err != nil || order.ID != "ord_1001" {
		t.Errorf("get_order: %+v (%v)", got.Calls["get_order"], err)
	}
	small, retry := action("refund_small"), action("refund_small_retry")
	if small.Decision != "allow" || small.Status != "executed" || got.Calls["refund_small"].IsError {
		t.Errorf("refund of 30.00: %+v, want allowed and executed", small)
	}
	if retry.ActionID != small.ActionID {
		t.Errorf("a retry with the same idempotency key answered action %q, want %q", retry.ActionID, small.ActionID)
	}
	if m := action("refund_medium"); m.Decision != "require_approval" || m.Status != "pending" || got.Calls["refund_medium"].IsError {
		t.Errorf("refund of 150.00: %+v, want pending approval (not an error)", m)
	}
	if l := action("refund_large"); !got.Calls["refund_large"].IsError || l.Decision != "deny" || l.Status != "denied" {
		t.Errorf("refund of 900.00: %+v, want a denial with isError", l)
	}
	for _, label := range []string{"refund_bad_amount", "unknown_order"} {
		c := got.Calls[label]
		var e errorResult
		if !c.IsError || json.Unmarshal([]byte(c.Text), &e) != nil || e.Error == "" || e.Message == "" {
			t.Errorf("%s: %+v, want isError with {error, message} JSON text", label, c)
		}
	}
	if e := got.Calls["unknown_order"]; !strings.Contains(e.Text, `"not_found"`) {
		t.Errorf("get_order on an unknown id: %s, want error not_found", e.Text)
	}
	var st actionStatus
	if err := json.Unmarshal(got.Calls["status_pending"].Structured, &st); err != nil || st.Status != "pending" {
		t.Errorf("get_action_status of the pending refund: %+v (%v)", got.Calls["status_pending"], err)
	}
}

// tsClient finds node and installs the pinned TypeScript SDK (npm ci) if
// needed; it skips the test without node unless MANDATE_REQUIRE_NODE=1.
func tsClient(t *testing.T) (node, clientDir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("MANDATE_REQUIRE_NODE") == "1" {
			t.Fatal("node is not installed, and MANDATE_REQUIRE_NODE=1")
		}
		t.Skip("node is not installed; the TypeScript SDK test needs Node 20 or later")
	}
	clientDir, err = filepath.Abs(filepath.Join("testdata", "tsclient"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(clientDir, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		// npm ci installs exactly what package-lock.json pins.
		npm := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		npm.Dir = clientDir
		if out, err := npm.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", clientDir, err, out)
		}
	}
	return node, clientDir
}
