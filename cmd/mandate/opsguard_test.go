package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holdingProxy forwards to target, holding every request whose path
// contains hold until release is closed; held counts those waiting.
type holdingProxy struct {
	rp      *httputil.ReverseProxy
	hold    string
	held    atomic.Int32
	release chan struct{}
}

func (p *holdingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, p.hold) {
		p.held.Add(1)
		<-p.release
	}
	p.rp.ServeHTTP(w, r)
}

// TestConcurrencyLimitPerAgent: with --max-concurrent-per-agent 2 and two
// of demo-agent's calls held in a slow backend, its third gets 429 with
// Retry-After: 1, counted and audited, while lookup-bot still gets through;
// the held calls then finish normally.
func TestConcurrencyLimitPerAgent(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	demo, lookup := f.key(t, "demo-agent"), f.key(t, "lookup-bot")
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
	s := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy, "--backend", backendFile,
		"--max-concurrent-per-agent", "2")

	var wg sync.WaitGroup
	results := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, body := mcpCall(t, s.base, demo, "get_order", map[string]any{"order_id": "ord_1001"})
			results[i] = strconv.Itoa(st) + " " + body
		}()
	}
	for deadline := time.Now().Add(20 * time.Second); proxy.held.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the backend holds %d calls, want 2", proxy.held.Load())
		}
	}
	st, retry, body := mcpCall(t, s.base, demo, "get_order", map[string]any{"order_id": "ord_1002"})
	if st != http.StatusTooManyRequests || retry != "1" {
		t.Fatalf("demo-agent's third call: %d Retry-After %q %s, want 429 with Retry-After: 1", st, retry, body)
	}
	st, _, body = mcpCall(t, s.base, lookup, "get_order", map[string]any{"order_id": "ord_1002"})
	if st != 200 || !strings.Contains(body, `ord_1002`) || strings.Contains(body, `"isError":true`) {
		t.Fatalf("lookup-bot while demo-agent is at its limit: %d %s, want its order", st, body)
	}
	release()
	wg.Wait()
	for i, r := range results {
		if !strings.HasPrefix(r, "200 ") || !strings.Contains(r, "ord_1001") || strings.Contains(r, `"isError":true`) {
			t.Fatalf("held call %d: %s, want its order once released", i, r)
		}
	}
	// A slot is free again.
	if st, _, body := mcpCall(t, s.base, demo, "get_order", map[string]any{"order_id": "ord_1002"}); st != 200 {
		t.Fatalf("demo-agent after the held calls finished: %d %s", st, body)
	}
	if v := metric(scrape(t, s.base), "mandate_http_refused_total", `reason="concurrency"`); v != 1 {
		t.Fatalf("mandate_http_refused_total{reason=concurrency} = %v, want 1", v)
	}
	if n := auditTools(t, f, "no secret here")["demo-agent/"+BusyTool]; n != 1 {
		t.Fatalf("audit records of the 429: %d, want 1", n)
	}
}

// TestOriginAndHost: a request with an Origin not this server's (or
// localhost, or an --allowed-host) is refused with 403 before its key is
// looked at; so is a Host that is not localhost on loopback (DNS
// rebinding), unless it is an --allowed-host.
func TestOriginAndHost(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	demo := f.key(t, "demo-agent")
	s := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy, "--allowed-host", "mandate.example.com")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.base, "http://"))
	args := map[string]any{"order_id": "ord_1001"}
	for _, tt := range []struct {
		name    string
		headers []string
		want    int
	}{
		{"no origin", nil, 200},
		{"localhost origin", []string{"Origin", "http://localhost:3000"}, 200},
		{"own address", []string{"Origin", "http://127.0.0.1:" + port}, 200},
		{"allowed host and origin", []string{"Host", "mandate.example.com", "Origin", "https://mandate.example.com"}, 200},
		{"other origin", []string{"Origin", "https://evil.example"}, 403},
		{"null origin", []string{"Origin", "null"}, 403},
		{"origin with allowed name as prefix", []string{"Origin", "https://mandate.example.com.evil.example"}, 403},
		{"rebinding host", []string{"Host", "evil.example:" + port}, 403},
	} {
		st, _, body := mcpCall(t, s.base, demo, "get_order", args, tt.headers...)
		if st != tt.want {
			t.Errorf("%s: %d %.200s, want %d", tt.name, st, body, tt.want)
		}
	}
	// Refused before the credentials: no key, yet 403 and no mcp_auth record.
	before := auditTools(t, f, demo)["mcp_auth"]
	if st, _, _ := mcpCall(t, s.base, "", "get_order", args, "Origin", "https://evil.example"); st != 403 {
		t.Fatalf("other origin without a key: %d, want 403", st)
	}
	if after := auditTools(t, f, demo)["mcp_auth"]; after != before {
		t.Fatalf("a refused origin reached authentication: mcp_auth %d -> %d", before, after)
	}
	m := scrape(t, s.base)
	if o, h := metric(m, "mandate_http_refused_total", `reason="origin"`), metric(m, "mandate_http_refused_total", `reason="host"`); o != 4 || h != 1 {
		t.Fatalf("refused origin %v, host %v; want 4 and 1", o, h)
	}
}

// TestHostGuardOffLoopback: the rules for connections that did not arrive
// on loopback, which a test on one machine cannot make for real: the
// connection's local address is set as net/http sets it.
func TestHostGuardOffLoopback(t *testing.T) {
	t.Parallel()
	req := func(local, host, origin string) *http.Request {
		r := httptest.NewRequest("POST", "/mcp", nil)
		r.Host = host
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		a, _ := net.ResolveTCPAddr("tcp", local)
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, a))
	}
	open := &hostGuard{listenHost: "10.0.0.5"}
	listed := &hostGuard{listenHost: "", allowed: []string{"mandate.example.com"}}
	for _, tt := range []struct {
		name string
		g    *hostGuard
		r    *http.Request
		want string
	}{
		{"any host without a list", open, req("10.0.0.5:8080", "whatever.example", ""), ""},
		{"own address as origin", open, req("10.0.0.5:8080", "10.0.0.5:8080", "http://10.0.0.5:8080"), ""},
		{"foreign origin", open, req("10.0.0.5:8080", "10.0.0.5:8080", "http://evil.example"), "origin"},
		{"listed host", listed, req("10.0.0.5:8080", "MANDATE.example.com:443", ""), ""},
		{"unlisted host", listed, req("10.0.0.5:8080", "10.0.0.5:8080", ""), "host"},
		{"listed origin", listed, req("10.0.0.5:8080", "mandate.example.com", "https://mandate.example.com"), ""},
		{"loopback, localhost", open, req("127.0.0.1:8080", "localhost:8080", ""), ""},
		{"loopback, ipv6", open, req("[::1]:8080", "[::1]:8080", ""), ""},
		{"loopback, rebinding", open, req("127.0.0.1:8080", "evil.example", ""), "host"},
	} {
		if got, _ := tt.g.refusal(tt.r); got != tt.want {
			t.Errorf("%s: refusal %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestHostGuardLogIsBounded: a refused request's Host and Origin are the
// client's text: the log line shows at most 256 bytes of each, with hidden
// characters made visible, however much was sent.
func TestHostGuardLogIsBounded(t *testing.T) {
	t.Parallel()
	var logged bytes.Buffer
	g := &hostGuard{log: slog.New(slog.NewJSONHandler(&logged, nil))}
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Fatal("a refused request was served") })
	for _, tt := range []struct{ host, origin string }{
		{"localhost", "https://evil.example/\u202e" + strings.Repeat("a", 60<<10)},
		{"evil\u202e" + strings.Repeat("b", 60<<10) + ".example", ""},
	} {
		logged.Reset()
		r := httptest.NewRequest("POST", "/mcp", nil)
		r.Host = tt.host
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		a, _ := net.ResolveTCPAddr("tcp", "127.0.0.1:8080")
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, a))
		w := httptest.NewRecorder()
		g.middleware(next).ServeHTTP(w, r)
		if w.Code != http.StatusForbidden || logged.Len() > 1024 || !strings.Contains(logged.String(), "⟨U+202E⟩") || strings.Contains(logged.String(), "\u202e") {
			t.Fatalf("%d, logged %d bytes: %.300s; want 403 and a short line with the hidden character visible", w.Code, logged.Len(), logged.String())
		}
	}
}

// TestStreamCaps: the per-agent and per-process caps on notification
// streams, with small caps (a test cannot cheaply hold maxStreams open).
func TestStreamCaps(t *testing.T) {
	t.Parallel()
	l := &agentLimiter{streamsPerAgent: 2, streamsTotal: 3}
	for _, step := range []struct {
		agent string
		want  int
	}{
		{"a", streamsOK}, {"a", streamsOK}, {"a", streamsAgentFull},
		{"b", streamsOK}, {"c", streamsServerFull}, {"b", streamsServerFull},
	} {
		if got := l.acquireStream(step.agent); got != step.want {
			t.Fatalf("stream for %s: %d, want %d (open %v)", step.agent, got, step.want, l.streams)
		}
	}
	l.releaseStream("a")
	if got := l.acquireStream("c"); got != streamsOK {
		t.Fatalf("after one closed, stream for c: %d, want it", got)
	}
	if got := l.acquireStream("a"); got != streamsServerFull {
		t.Fatalf("a at 1 of 2 with the server full: %d, want %d", got, streamsServerFull)
	}
	for _, a := range []string{"a", "b", "c"} {
		l.releaseStream(a)
	}
	if l.open != 0 || len(l.streams) != 0 {
		t.Fatalf("all closed: open %d, per agent %v", l.open, l.streams)
	}
}

// TestOpsEndpointsHost: /readyz and /metrics answer a DNS-rebinding Host
// or a foreign Origin with 403, on the MCP listener and on
// --metrics-listen alike (a loopback listener answers only to loopback
// names); /healthz answers any Host, for probes. (Before, /metrics and
// /readyz answered a rebound request.)
func TestOpsEndpointsHost(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	f2 := newHTTPFiles(t)
	plain := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy)
	split := startOps(t, "--http", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--db", f2.db, "--store", f2.store, "--policy", f2.policy)
	get := func(base, path string, headers ...string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			if headers[i] == "Host" {
				req.Host = headers[i+1]
			} else {
				req.Header.Set(headers[i], headers[i+1])
			}
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, base := range []string{plain.base, split.metrics} {
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
		for _, path := range []string{"/metrics", "/readyz"} {
			for _, tt := range []struct {
				name    string
				headers []string
				want    bool // refused
			}{
				{"own", nil, false},
				{"localhost", []string{"Host", "localhost:" + port}, false},
				{"rebinding host", []string{"Host", "evil.example:" + port}, true},
				{"other origin", []string{"Origin", "https://evil.example"}, true},
			} {
				if st := get(base, path, tt.headers...); (st == 403) != tt.want {
					t.Errorf("%s%s, %s: %d, refused want %v", base, path, tt.name, st, tt.want)
				}
			}
		}
		if st := get(base, "/healthz", "Host", "evil.example:"+port); st != 200 {
			t.Errorf("%s/healthz with a foreign Host: %d, want 200 (probes)", base, st)
		}
	}
	if v := metric(scrape(t, plain.base), "mandate_http_refused_total", `reason="host"`); v != 2 {
		t.Errorf(`mandate_http_refused_total{reason="host"} on the MCP listener = %v, want 2`, v)
	}
}

// TestShutdownGraceCoversACall: a stop waits for calls in flight at least
// as long as one may take (twice --backend-timeout), never less than 30 s:
// a fixed 30 s cut off a refund held 35 s at a backend given 20 s per call,
// its outcome unrecorded (a review).
func TestShutdownGraceCoversACall(t *testing.T) {
	for bt, want := range map[time.Duration]time.Duration{
		10 * time.Second: 30 * time.Second, // the default
		20 * time.Second: 45 * time.Second,
		time.Minute:      125 * time.Second,
	} {
		if got := shutdownGraceFor(bt); got != want {
			t.Errorf("shutdownGraceFor(%s) = %s, want %s", bt, got, want)
		}
	}
}
