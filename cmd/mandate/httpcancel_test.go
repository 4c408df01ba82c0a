package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// postMCP posts body to base/mcp with key at protocol proto (for
// 2026-07-28 with the Mcp-Method header method) and returns the status and
// the response body.
func postMCP(t *testing.T, base, key, proto, method, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", proto)
	if proto == "2026-07-28" {
		req.Header.Set("Mcp-Method", method)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err) // also from goroutines
		return 0, ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// cancelAs sends notifications/cancelled for id with key, in every form
// the server could read (both eras; the id as number and as string), and
// fails unless each is answered 202.
func cancelAs(t *testing.T, base, key, id string) {
	t.Helper()
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"}}`
	for _, c := range []struct{ proto, body string }{
		{"2025-11-25", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":` + id + `,"reason":"mine now"}}`},
		{"2025-11-25", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"` + id + `"}}`},
		{"2026-07-28", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":` + id + `,` + meta + `}}`},
	} {
		if st, body := postMCP(t, base, key, c.proto, "notifications/cancelled", c.body); st != http.StatusAccepted {
			t.Fatalf("cancel %s at %s: %d %s, want 202", id, c.proto, st, body)
		}
	}
}

// TestHTTPCancelIsNotAnotherAgents: on one stateless server, senior-bot's
// notifications/cancelled naming the JSON-RPC id of demo-agent's refund in
// flight (42, its order lookup held in a slow backend, before the attempt
// is recorded, where a cancel would stop it) or of lookup-bot's 2026-07-28
// subscriptions/listen (7) must end neither: request ids are the client's
// to pick, not an identity. The refund then goes through, and the stream
// still gets notifications. A client cancels its own call by closing the
// connection: its refund held the same way is never recorded.
func TestHTTPCancelIsNotAnotherAgents(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	caller, listener, other := f.key(t, "demo-agent"), f.key(t, "lookup-bot"), f.key(t, "senior-bot")
	proxy := &holdingProxy{hold: "ord_1001", release: make(chan struct{})}
	var released sync.Once
	release := func() { released.Do(func() { close(proxy.release) }) }
	t.Cleanup(release)
	_, backendFile := contractBackend(t, t.TempDir(), func(target string) string {
		u, _ := url.Parse(target)
		proxy.rp = httputil.NewSingleHostReverseProxy(u)
		srv := httptest.NewServer(proxy)
		t.Cleanup(srv.Close)
		t.Cleanup(release) // runs before srv.Close
		return srv.URL
	})
	s := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy, "--backend", backendFile)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	listen := openStream(t, ctx, s.base, listener, true) // id 7
	type answer struct {
		status int
		body   string
	}
	got := make(chan answer, 1)
	go func() {
		st, body := postMCP(t, s.base, caller, "2025-11-25", "tools/call",
			`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"5.00","reason":"damaged"}}}`)
		got <- answer{st, body}
	}()
	for deadline := time.Now().Add(20 * time.Second); proxy.held.Load() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("demo-agent's refund never reached the backend")
		}
	}

	// How a client cancels over HTTP: its own call 43, whose connection
	// it closes while the lookup is held, is never recorded.
	ownCtx, closeOwn := context.WithCancel(ctx)
	ownDone := make(chan struct{})
	go func() {
		defer close(ownDone)
		req, _ := http.NewRequestWithContext(ownCtx, "POST", s.base+"/mcp", strings.NewReader(
			`{"jsonrpc":"2.0","id":43,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"6.00","reason":"damaged"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		req.Header.Set("Authorization", "Bearer "+caller)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); proxy.held.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("demo-agent's second refund never reached the backend")
		}
	}

	cancelAs(t, s.base, other, "42")
	cancelAs(t, s.base, other, "7")
	closeOwn()
	<-ownDone
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.stderr.String(), "cancelled before the attempt was recorded"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("demo-agent closed the connection of its call 43 while the lookup was held: the server did not cancel it")
		}
	}
	select {
	case a := <-got:
		t.Fatalf("demo-agent's call 42 ended while its order lookup was held, after senior-bot's cancel for 42: %d %s", a.status, a.body)
	case <-time.After(500 * time.Millisecond):
	}
	release()
	a := <-got
	if a.status != 200 || !strings.Contains(a.body, "Done: refund") || strings.Contains(a.body, `"isError":true`) {
		t.Fatalf("demo-agent's refund (id 42) after senior-bot cancelled id 42: %d %s, want it done", a.status, a.body)
	}

	out, stderr, err := runMandate(t, nil, "audit", "export", "--db", f.db)
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, `"amount":"5.00"`) || strings.Contains(out, `"amount":"6.00"`) {
		t.Fatalf("audit trail: want the refund of 5.00 (call 42) and nothing of the 6.00 whose connection was closed:\n%s", out)
	}

	dropStatusRule(t, f)
	if !gotListChanged(listen, 50*time.Second) {
		t.Fatal("lookup-bot's subscriptions/listen (id 7) got no list_changed after senior-bot cancelled id 7: the stream was ended")
	}
}
