package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestServeNotifiesWithReviewLink: serve with --notify-url posts one
// message for a refund that waits for a person, to a receiver on
// 127.0.0.1, and with --admin-url the message links to that action on the
// approvals page. A retry with the same idempotency key posts nothing more.
func TestServeNotifiesWithReviewLink(t *testing.T) {
	t.Parallel()
	got := make(chan map[string]any, 4)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("webhook body is not JSON: %q", body)
		}
		got <- m
	}))
	t.Cleanup(rcv.Close)

	dir := t.TempDir()
	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent",
		"--db", filepath.Join(dir, "mandate.db"), "--store", filepath.Join(dir, "store.db"),
		"--notify-url", rcv.URL+"/hooks/T0SECRET", "--admin-url", "https://approvals.example.com/")
	args := map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "Late delivery goodwill", "idempotency_key": "notify-1"}
	var first actionResult
	decode(t, call(t, c, "refund_order", args), &first)
	if first.Status != "pending" || first.ActionID == "" {
		t.Fatalf("refund of 150.00: %+v; want pending", first)
	}
	select {
	case m := <-got:
		want := "https://approvals.example.com/actions/" + first.ActionID
		if m["url"] != want || m["action_id"] != first.ActionID {
			t.Fatalf("message url %v, action_id %v; want %s", m["url"], m["action_id"], want)
		}
		text, _ := m["text"].(string)
		for _, w := range []string{"demo-agent", "refund_order", "ord_1002", "150.00 USD", "Review it: " + want} {
			if !strings.Contains(text, w) {
				t.Fatalf("message text %q does not say %q", text, w)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message was posted for the pending refund")
	}

	var again actionResult
	decode(t, call(t, c, "refund_order", args), &again)
	if again.ActionID != first.ActionID {
		t.Fatalf("retry with the same key: action %s, want %s", again.ActionID, first.ActionID)
	}
	select {
	case m := <-got:
		t.Fatalf("a retry of the same pending action notified again: %v", m)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestServeRefusesBadAdminURL: an --admin-url that is no http(s) URL of a
// page is refused at start (exit 2), naming the flag.
func TestServeRefusesBadAdminURL(t *testing.T) {
	for _, u := range []string{"approvals.example.com", "ftp://approvals.example.com", "https://approvals.example.com/?x=1"} {
		_, stderr, status := runInProcess("serve", "--agent", "demo-agent", "--db", filepath.Join(t.TempDir(), "m.db"), "--store", filepath.Join(t.TempDir(), "s.db"),
			"--notify-url", "https://hooks.example.com/x", "--admin-url", u)
		if status != 2 || !strings.Contains(stderr, "--admin-url") {
			t.Fatalf("--admin-url %q: exit %d\n%s", u, status, stderr)
		}
	}
}
