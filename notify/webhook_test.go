package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// receiver is a webhook endpoint on 127.0.0.1 that answers with the codes
// in plan, in turn (200 once they run out), and keeps every body.
type receiver struct {
	mu     sync.Mutex
	plan   []int
	bodies [][]byte
	hold   chan struct{} // if set, each request waits for it to close
	srv    *httptest.Server
}

func newReceiver(t *testing.T, plan ...int) *receiver {
	r := &receiver{plan: plan}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.hold != nil {
			select {
			case <-r.hold:
			case <-req.Context().Done():
				return
			}
		}
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		code := http.StatusOK
		if len(r.plan) > 0 {
			code, r.plan = r.plan[0], r.plan[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) first() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[0]
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

// waitFor polls until cond holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// agentClient serves the real tools as demo-agent in process, with the
// webhook middleware, over a fresh database and demo store.
func agentClient(t *testing.T, hook *Webhook) *client.Client {
	t.Helper()
	ctx := context.Background()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, _, err := store.OpenSeeded(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hook.DB = db
	hook.Start(ctx)
	t.Cleanup(hook.Close)
	// As a server does before deciding: its policy and rates are the live ones.
	if err := db.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	d := &tools.Deps{Agent: "demo-agent", Policy: policy.NewEngine(pol), DB: db, Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}
	c, err := client.NewInProcessClient(tools.NewServer(d, "test", Middleware(hook)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	return c
}

func refund(t *testing.T, c *client.Client, order, amount string) tools.ActionResult {
	t.Helper()
	res, err := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": order, "amount": amount, "reason": "late"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out tools.ActionResult
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWebhookDelivery(t *testing.T) {
	tests := []struct {
		name         string
		plan         []int
		wantAttempts int
	}{
		{"first try", nil, 1},
		{"retried after server errors", []int{503, 500}, 3},
		{"retried after 429", []int{429}, 2},
		{"gives up after its attempts", []int{500, 500, 500, 500, 500, 500}, 3},
		{"a client error is not retried", []int{400}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t, tt.plan...)
			hook := &Webhook{URL: r.srv.URL, AdminURL: "http://127.0.0.1:8080/", Attempts: 3, Backoff: 5 * time.Millisecond}
			c := agentClient(t, hook)
			if res := refund(t, c, "ord_1001", "10.00"); res.Status != storage.StatusExecuted {
				t.Fatalf("small refund: %+v", res)
			}
			pending := refund(t, c, "ord_1002", "150.00")
			if pending.Status != storage.StatusPending {
				t.Fatalf("middle refund: %+v, want pending", pending)
			}
			waitFor(t, "the webhook", func() bool { return r.count() >= tt.wantAttempts })
			time.Sleep(50 * time.Millisecond) // room for a wrong extra attempt
			if n := r.count(); n != tt.wantAttempts {
				t.Fatalf("%d posts, want %d", n, tt.wantAttempts)
			}
			var m Message
			if err := json.Unmarshal(r.first(), &m); err != nil {
				t.Fatalf("body %s: %v", r.first(), err)
			}
			if m.ActionID != pending.ActionID || m.Agent != "demo-agent" || m.Tool != "refund_order" ||
				m.URL != "http://127.0.0.1:8080/actions/"+pending.ActionID || m.ExpiresAt.IsZero() {
				t.Fatalf("message = %+v", m)
			}
			for _, want := range []string{"Approval needed", "demo-agent", "order_id ord_1002", "amount 150.00 USD", pending.ActionID} {
				if !strings.Contains(m.Text, want) {
					t.Fatalf("text %q lacks %q", m.Text, want)
				}
			}
		})
	}
}

// TestWebhookNeverBlocks holds the receiver's answer: the agent's call
// still returns at once, and the message arrives once released.
func TestWebhookNeverBlocks(t *testing.T) {
	r := newReceiver(t)
	r.hold = make(chan struct{})
	hook := &Webhook{URL: r.srv.URL, Attempts: 1}
	c := agentClient(t, hook)
	start := time.Now()
	res := refund(t, c, "ord_1002", "150.00")
	if took := time.Since(start); took > 2*time.Second || res.Status != storage.StatusPending {
		t.Fatalf("pending call took %s (%+v)", took, res)
	}
	if n := r.count(); n != 0 {
		t.Fatalf("%d bodies received while the receiver is held", n)
	}
	close(r.hold)
	waitFor(t, "the held webhook", func() bool { return r.count() == 1 })
}

// TestMessageTextIsInert: agent-supplied text cannot become a Slack link or
// mention, nor reorder the message with bidi controls.
func TestMessageTextIsInert(t *testing.T) {
	w := &Webhook{}
	m := w.message(&storage.Action{ID: "act_1", Agent: "demo-agent", Tool: "refund_order",
		Args: json.RawMessage(`{"order_id":"<!channel> <https://evil.example|ord_1> \u202eevil","amount":"30.00"}`)})
	for _, bad := range []string{"<!channel>", "<https://", "\u202e"} {
		if strings.Contains(m.Text, bad) {
			t.Errorf("message text %q holds %q", m.Text, bad)
		}
	}
	for _, want := range []string{"&lt;!channel&gt;", "⟨U+202E⟩evil", "amount 30.00"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("message text %q lacks %q", m.Text, want)
		}
	}
}

// TestWebhookOncePerAction: a retry of a pending action with the same
// idempotency key ("already asked for") notifies nobody again (a review
// got three posts for one action).
func TestWebhookOncePerAction(t *testing.T) {
	r := newReceiver(t)
	hook := &Webhook{URL: r.srv.URL, Attempts: 1}
	c := agentClient(t, hook)
	var id string
	for range 3 {
		res, err := c.CallTool(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
			Arguments: map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late", "idempotency_key": "k1"}}})
		if err != nil {
			t.Fatal(err)
		}
		var out tools.ActionResult
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, &out)
		if out.Status != storage.StatusPending || (id != "" && out.ActionID != id) {
			t.Fatalf("retry: %+v", out)
		}
		id = out.ActionID
	}
	waitFor(t, "the webhook", func() bool { return r.count() >= 1 })
	time.Sleep(100 * time.Millisecond) // room for a wrong second post
	if n := r.count(); n != 1 {
		t.Fatalf("%d posts for one pending action, want 1", n)
	}
}

// TestWebhookOncePerActionAcrossProcesses: a second webhook on the same
// database (another replica the retry reached, or this server after a
// restart: its own memory of what it sent is empty) posts nothing for an
// action the first one already posted.
func TestWebhookOncePerActionAcrossProcesses(t *testing.T) {
	r := newReceiver(t)
	first := &Webhook{URL: r.srv.URL, Attempts: 1}
	c := agentClient(t, first)
	out := refund(t, c, "ord_1002", "150.00")
	if out.Status != storage.StatusPending {
		t.Fatalf("refund: %+v", out)
	}
	waitFor(t, "the webhook", func() bool { return r.count() >= 1 })

	second := &Webhook{URL: r.srv.URL, Attempts: 1, DB: first.DB}
	second.Start(context.Background())
	second.Pending(out.ActionID)
	second.Close() // delivers what it queued
	if n := r.count(); n != 1 {
		t.Fatalf("%d posts for one pending action seen by two processes, want 1", n)
	}
	// Another action is still posted by whoever sees it first.
	other := refund(t, c, "ord_1002", "120.00")
	second = &Webhook{URL: r.srv.URL, Attempts: 1, DB: first.DB}
	second.Start(context.Background())
	second.Pending(other.ActionID)
	second.Close()
	waitFor(t, "the second action's post", func() bool { return r.count() >= 2 })
	time.Sleep(100 * time.Millisecond) // room for a wrong third post by the first webhook
	if n := r.count(); n != 2 {
		t.Fatalf("%d posts for two pending actions, want 2", n)
	}
}

// TestFailedDeliveryGivesTheClaimBack: a message nobody received (the
// receiver down) gives its claim back, so the next server to see the
// action (a replica, or this one after a restart) posts it; a review found
// the claim kept and nobody ever told.
func TestFailedDeliveryGivesTheClaimBack(t *testing.T) {
	down := newReceiver(t, 503, 503, 503)
	first := &Webhook{URL: down.srv.URL, Attempts: 1}
	c := agentClient(t, first)
	out := refund(t, c, "ord_1002", "150.00")
	if out.Status != storage.StatusPending {
		t.Fatalf("refund: %+v", out)
	}
	waitFor(t, "the failed post", func() bool { return down.count() >= 1 })
	first.Close() // its worker has finished with the failed post

	up := newReceiver(t)
	second := &Webhook{URL: up.srv.URL, Attempts: 1, DB: first.DB}
	second.Start(context.Background())
	second.Pending(out.ActionID)
	second.Close()
	if n := up.count(); n != 1 {
		t.Fatalf("%d posts of a pending action whose only earlier post failed; want 1", n)
	}
}

// TestWebhookDeliversQueuedOnClose: a message still queued when the server
// stops (a piped stdio session ends with its input) is delivered by Close,
// not dropped; one queued once Close has begun (a call still finishing
// during an HTTP shutdown) is logged, not lost silently.
func TestWebhookDeliversQueuedOnClose(t *testing.T) {
	r := newReceiver(t)
	r.hold = make(chan struct{})
	var logs syncBuffer
	hook := &Webhook{URL: r.srv.URL, Attempts: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	c := agentClient(t, hook)
	if res := refund(t, c, "ord_1002", "150.00"); res.Status != storage.StatusPending {
		t.Fatalf("%+v, want pending", res)
	}
	time.AfterFunc(100*time.Millisecond, func() { close(r.hold) })
	hook.Close()
	if n := r.count(); n != 1 {
		t.Fatalf("%d posts after Close, want the queued one", n)
	}
	hook.Pending("act_late")
	if !strings.Contains(logs.String(), "act_late") {
		t.Fatalf("a message after Close was dropped silently; log:\n%s", logs.String())
	}
}

// TestWebhookFailureLogsNoURL: a webhook URL's path is a credential (a
// Slack incoming webhook's is), so a failure is logged with its host only;
// and a redirect is not followed.
func TestWebhookFailureLogsNoURL(t *testing.T) {
	var logs syncBuffer
	elsewhere := newReceiver(t)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, elsewhere.srv.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	defer redirecting.Close()
	for _, u := range []string{"http://127.0.0.1:1/services/T0/B0/SECRET?token=hunter2", redirecting.URL + "/services/T0/B0/SECRET"} {
		hook := &Webhook{URL: u, Attempts: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		c := agentClient(t, hook)
		if res := refund(t, c, "ord_1002", "150.00"); res.Status != storage.StatusPending {
			t.Fatalf("%+v, want pending", res)
		}
		hook.Close()
	}
	out := logs.String()
	if strings.Contains(out, "SECRET") || strings.Contains(out, "hunter2") || !strings.Contains(out, "notification failed") {
		t.Fatalf("log:\n%s", out)
	}
	if n := elsewhere.count(); n != 0 {
		t.Fatalf("the redirect was followed %d times", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
