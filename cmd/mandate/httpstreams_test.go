package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// streamRequest is the request that opens a notification stream on
// base/mcp with key: a 2025-11-25 GET stream, or a 2026-07-28
// subscriptions/listen POST when modern.
func streamRequest(ctx context.Context, base, key string, modern bool) *http.Request {
	method, proto, body := "GET", "2025-11-25", ""
	if modern {
		method, proto = "POST", "2026-07-28"
		body = `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` +
			`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"}}}}`
	}
	req, _ := http.NewRequestWithContext(ctx, method, base+"/mcp", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", proto)
	if modern {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Mcp-Method", "subscriptions/listen")
	}
	return req
}

// openStream opens a notification stream on base/mcp with key (see
// streamRequest; a subscriptions/listen's acknowledgement is read first:
// only then is it subscribed). It returns the stream's data lines.
func openStream(t *testing.T, ctx context.Context, base, key string, modern bool) <-chan string {
	t.Helper()
	req := streamRequest(ctx, base, key, modern)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("%s %s stream: %d %s %s", req.Method, req.Header.Get("Mcp-Protocol-Version"), res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	lines := make(chan string, 16)
	go func() {
		defer res.Body.Close()
		defer close(lines)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				lines <- data
			}
		}
	}()
	if modern {
		if ack := <-lines; !strings.Contains(ack, "notifications/subscriptions/acknowledged") {
			t.Fatalf("subscriptions/listen: first message %q, want the acknowledgement", ack)
		}
	}
	return lines
}

// dropStatusRule drops order_reader's get_action_status rule (one of
// lookup-bot's) from the policy file, so the server reloads and broadcasts
// notifications/tools/list_changed.
func dropStatusRule(t *testing.T, f httpFiles) {
	t.Helper()
	pol, err := os.ReadFile(f.policy)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(pol), "p, order_reader, get_action_status, true, allow\n", "", 1)
	if edited == string(pol) {
		t.Fatal("the test policy has no order_reader get_action_status rule")
	}
	if err := os.WriteFile(f.policy, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
}

// gotListChanged reports whether ch delivers notifications/tools/list_changed
// within d.
func gotListChanged(ch <-chan string, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				return false
			}
			if strings.Contains(msg, "notifications/tools/list_changed") {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

// TestHTTPDeleteCannotEndAnotherAgentsStream: a 2025-11-25 agent's GET
// notification stream is its own. Another agent, with its own valid key,
// must not be able to end it (DELETE /mcp) or take its notifications.
func TestHTTPDeleteCannotEndAnotherAgentsStream(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	victim, other := f.key(t, "lookup-bot"), f.key(t, "senior-bot")
	base := startHTTP(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stream := openStream(t, ctx, base, victim, false)
	control := openStream(t, ctx, base, victim, true) // 2026-07-28: tells us the broadcast happened

	// senior-bot, with its own key and no session id at all, sends DELETE.
	req, _ := http.NewRequest("DELETE", base+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+other)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	t.Logf("DELETE /mcp by another agent: %d", res.StatusCode)

	dropStatusRule(t, f)
	if !gotListChanged(control, 50*time.Second) {
		t.Fatal("control stream got no list_changed")
	}
	if !gotListChanged(stream, 3*time.Second) {
		t.Fatalf("lookup-bot's GET stream got no notifications/tools/list_changed: senior-bot's DELETE /mcp (status %d) ended lookup-bot's session", res.StatusCode)
	}
}

// TestHTTPStreamsHaveOwnSessions: two agents' GET streams are two streams:
// each gets the broadcast.
func TestHTTPStreamsHaveOwnSessions(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	a, b := f.key(t, "lookup-bot"), f.key(t, "senior-bot")
	base := startHTTP(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	sa := openStream(t, ctx, base, a, false)
	sb := openStream(t, ctx, base, b, false)
	control := openStream(t, ctx, base, a, true)
	dropStatusRule(t, f)
	if !gotListChanged(control, 50*time.Second) {
		t.Fatal("control stream got no list_changed")
	}
	gotA, gotB := gotListChanged(sa, 3*time.Second), gotListChanged(sb, 3*time.Second)
	if !gotA || !gotB {
		t.Fatalf("after a policy reload: lookup-bot's GET stream got list_changed %v, senior-bot's %v; want both (they share one session)", gotA, gotB)
	}
}

// TestHTTPRevokedKeyEndsStreams: a key revoked while its notification streams
// are open stops working there too: the server ends them (within a few
// seconds) instead of serving them for as long as the client likes.
func TestHTTPRevokedKeyEndsStreams(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	key := f.key(t, "lookup-bot")
	base := startHTTP(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := openStream(t, ctx, base, key, false)
	listen := openStream(t, ctx, base, key, true)
	id := strings.Split(key, "_")[1]
	if _, stderr, err := runMandate(t, nil, "agent", "key", "revoke", id, "--db", f.db); err != nil {
		t.Fatalf("revoke: %v %s", err, stderr)
	}
	if res := mcpPost(t, base, "Bearer "+key); res.StatusCode != 401 {
		t.Fatalf("revoked key: %d, want 401", res.StatusCode)
	}
	ended := func(ch <-chan string) bool {
		deadline := time.After(15 * time.Second)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	g, l := ended(get), ended(listen)
	if !g || !l {
		t.Fatalf("15 s after its key was revoked (and refused with 401), the key's streams are still open: GET ended %v, subscriptions/listen ended %v", g, l)
	}
}

// TestHTTPShutdownWithOpenStream: SIGTERM with a 2025-11-25 client's idle
// notification stream open exits 0 promptly (README: "exits 0").
func TestHTTPShutdownWithOpenStream(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	key := f.key(t, "lookup-bot")
	base, stop := startHTTPProc(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = openStream(t, ctx, base, key, false)
	start := time.Now()
	err := stop()
	if took := time.Since(start); err != nil || took > 10*time.Second {
		t.Fatalf("SIGTERM with an idle GET stream open: exit %v after %s; want exit 0 at once", err, took.Round(time.Second))
	}
}

// TestHTTPSlowBodyTimesOut: a peer that sends a request's headers, announcing a
// 10-byte body it never sends, holds a connection (and a goroutine) for
// ever: no answer, no close, with or without credentials. Headers have
// 10 s; a body must have a bound too, or anyone who can reach the port
// can pin connections until the process runs out of descriptors.
func TestHTTPSlowBodyTimesOut(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	base := startHTTP(t, f)
	for _, path := range []string{"/mcp", "/healthz"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = conn.SetReadDeadline(start.Add(40 * time.Second))
			b, err := io.ReadAll(conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("POST %s with a 10-byte body never sent: after %s no answer (%d bytes) and the connection is still open", path, time.Since(start).Round(time.Second), len(b))
			}
			t.Logf("POST %s: server answered/closed after %s: %.60q", path, time.Since(start).Round(time.Second), b)
		})
	}
}

// TestHTTPStreamCap: one agent may hold maxStreamsPerAgent notification
// streams open on a server, GETs and subscriptions/listen together; the
// next of either kind is refused with 429, counted and audited, while
// another agent still opens one. Closing a stream frees its place.
// (Before the cap, one key could open streams without end.)
func TestHTTPStreamCap(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	a, b := f.key(t, "lookup-bot"), f.key(t, "senior-bot")
	s := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// status opens a stream, returns its status and body, and closes it.
	status := func(key string, modern bool) (int, string) {
		res, err := http.DefaultClient.Do(streamRequest(ctx, s.base, key, modern))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode == 200 {
			return 200, ""
		}
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}

	firstCtx, closeFirst := context.WithCancel(ctx)
	openStream(t, firstCtx, s.base, a, false)
	for i := 1; i < maxStreamsPerAgent; i++ {
		openStream(t, ctx, s.base, a, i%2 == 1)
	}
	for _, modern := range []bool{false, true} {
		if st, body := status(a, modern); st != http.StatusTooManyRequests || !strings.Contains(body, "notification streams") {
			t.Fatalf("lookup-bot's stream %d (subscriptions/listen %v): %d %q, want 429", maxStreamsPerAgent+1, modern, st, body)
		}
	}
	openStream(t, ctx, s.base, b, false)

	closeFirst()
	// Until the server has seen the first stream close, a new one is still
	// refused, counted and audited like the two above: those count too.
	refused := 2
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, body := status(a, false)
		if st == 200 {
			break
		}
		if st == http.StatusTooManyRequests {
			refused++
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup-bot after closing one of its streams: %d %q, want a stream", st, body)
		}
	}
	if v := metric(scrape(t, s.base), "mandate_http_refused_total", `reason="streams"`); v != float64(refused) {
		t.Fatalf(`mandate_http_refused_total{reason="streams"} = %v, want %d`, v, refused)
	}
	if n := auditTools(t, f, "no secret here")["lookup-bot/"+BusyTool]; n != refused {
		t.Fatalf("audit records of the refused streams: %d, want %d", n, refused)
	}
}
