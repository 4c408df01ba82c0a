package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// httpFiles is one test's databases and policy for `serve --http`: the
// shipped policy plus lookup-bot, an agent that may only look orders up,
// so two keys see different tools.
type httpFiles struct{ db, store, policy string }

func newHTTPFiles(t *testing.T) httpFiles {
	t.Helper()
	dir := t.TempDir()
	shipped, err := os.ReadFile(filepath.Join("..", "..", "policy.csv"))
	if err != nil {
		t.Fatal(err)
	}
	f := httpFiles{db: filepath.Join(dir, "mandate.db"), store: filepath.Join(dir, "store.db"), policy: filepath.Join(dir, "policy.csv")}
	extra := "\np, order_reader, get_order, true, allow\np, order_reader, get_action_status, true, allow\ng, lookup-bot, order_reader\n"
	if err := os.WriteFile(f.policy, append(shipped, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// key creates an API key for agent with the CLI and returns it.
func (f httpFiles) key(t *testing.T, agent string) string {
	t.Helper()
	out, stderr, err := runMandate(t, nil, "agent", "key", "create", agent, "--db", f.db, "--policy", f.policy)
	if err != nil {
		t.Fatalf("agent key create %s: %v\n%s", agent, err, stderr)
	}
	key := strings.TrimSpace(out)
	if !strings.HasPrefix(key, "mk_") || len(key) != len("mk_")+12+1+64 {
		t.Fatalf("agent key create printed %q, want mk_<12 hex>_<64 hex>", key)
	}
	return key
}

// startHTTP runs `mandate serve --http 127.0.0.1:0` on f as another
// process and returns its base URL. At cleanup it sends SIGTERM and
// expects exit status 0.
func startHTTP(t *testing.T, f httpFiles) string {
	t.Helper()
	base, _ := startHTTPProc(t, f)
	return base
}

// startHTTPProc is startHTTP that also returns stop, which sends SIGTERM
// and waits for the exit (also done at cleanup, once).
// extra flags go to serve; with --tls-cert the URL is https.
func startHTTPProc(t *testing.T, f httpFiles, extra ...string) (string, func() error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy, "--log-format", "json"}, extra...)...)
	cmd.Env = childEnv(nil)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	addr := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			stderr.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving MCP over Streamable HTTP" {
				addr <- line.Addr
			}
		}
		close(addr)
	}()
	var once sync.Once
	var exitErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-copied
			exitErr = cmd.Wait()
		})
		return exitErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve --http did not exit 0 on SIGTERM: %v", err)
		}
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("serve --http had a data race")
		}
		if t.Failed() {
			t.Logf("serve --http stderr:\n%s", stderr.String())
		}
	})
	a, ok := <-addr
	if !ok {
		t.Fatalf("serve --http exited before listening:\n%s", stderr.String())
	}
	if slices.Contains(extra, "--tls-cert") {
		return "https://" + a, stop
	}
	return "http://" + a, stop
}

// mcpClient is what the tests need of an MCP client library.
type mcpClient interface {
	tools(t *testing.T) []string
	call(t *testing.T, tool string, args map[string]any) map[string]any
}

type mcpGoClient struct{ c *client.Client }

func connectMCPGo(t *testing.T, base, proto string, headers map[string]string) mcpClient {
	t.Helper()
	c, err := client.NewStreamableHttpClient(base+"/mcp", transport.WithHTTPHeaders(headers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = proto
	init.Params.ClientInfo = mcp.Implementation{Name: "mandate-http-test", Version: "test"}
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("mcp-go initialize at %s: %v", proto, err)
	}
	if res.ProtocolVersion != proto || res.ServerInfo.Name != "mandate" {
		t.Fatalf("mcp-go: negotiated %q with %q, want %q with mandate", res.ProtocolVersion, res.ServerInfo.Name, proto)
	}
	return mcpGoClient{c}
}

func (m mcpGoClient) tools(t *testing.T) []string {
	t.Helper()
	res, err := m.c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func (m mcpGoClient) call(t *testing.T, tool string, args map[string]any) map[string]any {
	t.Helper()
	var got map[string]any
	decode(t, call(t, m.c, tool, args), &got)
	return got
}

type sdkClient struct {
	s     *sdk.ClientSession
	proto string
}

// headerTransport adds headers to every request, as an agent's HTTP
// client configured with its key does.
type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func connectSDKHTTP(t *testing.T, base, proto string, headers map[string]string) mcpClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c := sdk.NewClient(&sdk.Implementation{Name: "mandate-http-test", Version: "test"}, nil)
	s, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: &http.Client{Transport: headerTransport(headers)}, DisableStandaloneSSE: true},
		&sdk.ClientSessionOptions{ProtocolVersion: proto})
	if err != nil {
		t.Fatalf("go-sdk connect at %s: %v", proto, err)
	}
	t.Cleanup(func() { s.Close() })
	if init := s.InitializeResult(); init == nil || init.ProtocolVersion != proto {
		t.Fatalf("go-sdk: initialize result %+v, want protocol %s", init, proto)
	}
	return sdkClient{s, proto}
}

func (c sdkClient) tools(t *testing.T) []string {
	t.Helper()
	res, err := c.s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	// The list depends on the key: no cache may share it across keys.
	if c.proto >= "2026-07-28" && res.CacheScope != "private" {
		t.Fatalf("tools/list cacheScope %q, want private", res.CacheScope)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func (c sdkClient) call(t *testing.T, tool string, args map[string]any) map[string]any {
	t.Helper()
	res, err := c.s.CallTool(context.Background(), &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: JSON-RPC error %v; want a tool result", tool, err)
	}
	return sdkFields(t, res)
}

// TestServeHTTPClients: over Streamable HTTP, mcp-go's and the official Go
// SDK's clients, each at 2026-07-28 (stateless) and 2025-11-25, with two
// keys for two agents on one server: each key sees its own tools and gets
// its own decisions, and an identity claimed in a header or an argument
// changes nothing.
func TestServeHTTPClients(t *testing.T) {
	t.Parallel()
	clients := map[string]func(t *testing.T, base, proto string, headers map[string]string) mcpClient{
		"mcp-go": connectMCPGo, "go-sdk": connectSDKHTTP,
	}
	for lib, connect := range clients {
		for _, proto := range []string{"2026-07-28", "2025-11-25"} {
			t.Run(lib+"/"+proto, func(t *testing.T) {
				t.Parallel()
				// Fresh files each: the refunds below count toward limits
				// over time (customer_refunds_30d).
				f := newHTTPFiles(t)
				demo, lookup := f.key(t, "demo-agent"), f.key(t, "lookup-bot")
				base := startHTTP(t, f)
				// The other headers, and a session id, claim a stronger
				// identity; only the key counts.
				dc := connect(t, base, proto, map[string]string{"Authorization": "Bearer " + demo, "X-Mandate-Agent": "senior-bot", "X-Agent": "senior-bot", "Mcp-Session-Id": "senior-bot"})
				lc := connect(t, base, proto, map[string]string{"Authorization": "Bearer " + lookup})

				all := append(slices.Clone(lookupTools), actionTools...)
				slices.Sort(all)
				if got := dc.tools(t); !slices.Equal(got, all) {
					t.Fatalf("demo-agent tools %v, want %v", got, all)
				}
				if got, want := lc.tools(t), []string{"get_action_status", "get_order"}; !slices.Equal(got, want) {
					t.Fatalf("lookup-bot tools %v, want %v", got, want)
				}
				for _, tt := range []struct{ order, amount, decision string }{
					{"ord_1001", "30.00", "allow"},
					{"ord_1002", "150.00", "require_approval"},
					{"ord_1002", "900.00", "deny"}, // senior-bot would get require_approval
				} {
					got := dc.call(t, "refund_order", map[string]any{"order_id": tt.order, "amount": tt.amount, "reason": "Late delivery goodwill"})
					if got["decision"] != tt.decision {
						t.Fatalf("demo-agent refund %s: %v, want decision %s", tt.amount, got, tt.decision)
					}
				}
				// An identity in the arguments is not an argument the tool
				// takes: refused as invalid, never acted on as senior-bot.
				got := dc.call(t, "refund_order", map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "x", "agent": "senior-bot"})
				if got["decision"] == "allow" || got["decision"] == "require_approval" {
					t.Fatalf("identity in arguments was honoured: %v", got)
				}
				// lookup-bot may not refund, even though the tool exists.
				got = lc.call(t, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "1.00", "reason": "x"})
				if got["decision"] != "deny" {
					t.Fatalf("lookup-bot refund: %v, want deny", got)
				}
				if o := lc.call(t, "get_order", map[string]any{"order_id": "ord_1001"}); o["id"] != "ord_1001" {
					t.Fatalf("lookup-bot get_order: %v", o)
				}
			})
		}
	}
}

// mcpPost sends one tools/call to /mcp with the given Authorization header
// ("" for none) and returns the response.
func mcpPost(t *testing.T, base, authz string) *http.Response {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"30.00","reason":"x"}}}`
	req, err := http.NewRequest("POST", base+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// auditTools counts the audit records of f by tool and by agent/tool, and
// fails if any holds secret.
func auditTools(t *testing.T, f httpFiles, secret string) map[string]int {
	t.Helper()
	out, stderr, err := runMandate(t, nil, "audit", "export", "--db", f.db)
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, stderr)
	}
	n := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ Agent, Tool string }
		if line != "" && json.Unmarshal([]byte(line), &r) == nil {
			n[r.Tool]++
			n[r.Agent+"/"+r.Tool]++
		}
		if strings.Contains(line, secret) {
			t.Fatalf("an audit record holds a key's secret: %s", line)
		}
	}
	return n
}

// TestServeHTTPRefusals: no key, a malformed or wrong key and a revoked
// key each get 401 with the RFC 9728 challenge, and nothing reaches the
// tools; the refusals are audited; a key revoked with the CLI is refused
// by a second server on the same database at its very next request; the
// health and metadata endpoints answer without a key.
func TestServeHTTPRefusals(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	good, other := f.key(t, "demo-agent"), f.key(t, "senior-bot")
	a, b := startHTTP(t, f), startHTTP(t, f)

	for _, base := range []string{a, b} {
		res, err := http.Get(base + "/healthz")
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("GET /healthz: %v %v", res, err)
		}
		res.Body.Close()
		res, err = http.Get(base + "/.well-known/oauth-protected-resource")
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Resource string }
		if err := json.NewDecoder(res.Body).Decode(&meta); err != nil || meta.Resource != base+"/mcp" {
			t.Fatalf("protected resource metadata: %+v %v, want resource %s/mcp", meta, err, base)
		}
		res.Body.Close()
	}

	id, secret := strings.Split(good, "_")[1], strings.Split(good, "_")[2]
	wrongSecret := "mk_" + id + "_" + strings.Repeat("0", 64)
	bad := []struct{ name, authz string }{
		{"no header", ""},
		{"empty bearer", "Bearer "},
		{"basic", "Basic ZGVtby1hZ2VudDpwdw=="},
		{"not a key", "Bearer demo-agent"},
		{"wrong secret", "Bearer " + wrongSecret},
		{"key without scheme", good},
	}
	for _, tt := range bad {
		res := mcpPost(t, a, tt.authz)
		want := `Bearer resource_metadata="` + a + `/.well-known/oauth-protected-resource"`
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != want {
			t.Fatalf("%s: %d %q, want 401 with %q", tt.name, res.StatusCode, res.Header.Get("WWW-Authenticate"), want)
		}
	}
	counts := auditTools(t, f, secret)
	if counts["refund_order"] != 0 || counts["mcp_auth"] != len(bad) {
		t.Fatalf("audit after refused requests: %v, want no refund_order and %d mcp_auth", counts, len(bad))
	}

	// A body over 1 MiB is refused before it is parsed, and the server
	// keeps serving.
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"` + strings.Repeat("x", 2<<20) + `"}}}`
	req, _ := http.NewRequest("POST", a+"/mcp", strings.NewReader(big))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+good)
	if res, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == 200 && strings.Contains(string(b), `"result"`) {
			t.Fatalf("a 2 MiB request was served: %.200s", b)
		}
	}

	// Both servers take the keys; then revoke one with the CLI.
	for _, base := range []string{a, b} {
		for _, k := range []string{good, other} {
			if res := mcpPost(t, base, "Bearer "+k); res.StatusCode != 200 {
				t.Fatalf("a valid key got %d", res.StatusCode)
			}
		}
	}
	if out, stderr, err := runMandate(t, nil, "agent", "key", "revoke", id, "--db", f.db); err != nil || !strings.Contains(out, "revoked API key "+id) {
		t.Fatalf("agent key revoke: %q %v\n%s", out, err, stderr)
	}
	before := auditTools(t, f, secret)
	for _, base := range []string{b, a} {
		if res := mcpPost(t, base, "Bearer "+good); res.StatusCode != 401 {
			t.Fatalf("revoked key at %s: %d, want 401 at once", base, res.StatusCode)
		}
		if res := mcpPost(t, base, "Bearer "+other); res.StatusCode != 200 {
			t.Fatalf("the other key at %s: %d after revoking one, want 200", base, res.StatusCode)
		}
	}
	after := auditTools(t, f, secret)
	if after["mcp_auth"] != before["mcp_auth"]+2 || after["demo-agent/refund_order"] != before["demo-agent/refund_order"] ||
		after["senior-bot/refund_order"] <= before["senior-bot/refund_order"] {
		t.Fatalf("audit after revocation: %v then %v: want 2 more mcp_auth, no refund by the revoked key's agent, the other key's refunds", before, after)
	}
	out, _, err := runMandate(t, nil, "agent", "key", "list", "--db", f.db)
	if err != nil || !strings.Contains(out, id+"  demo-agent  revoked") {
		t.Fatalf("agent key list: %v\n%s", err, out)
	}
}

// TestServeHTTPFlags: the HTTP transport's flag mistakes are usage errors
// (exit 2) that say what to do.
func TestServeHTTPFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--http", "127.0.0.1:0", "--agent", "demo-agent"}, "cannot be used with --http"},
		{[]string{"--http", "0.0.0.0:8080"}, "--insecure-http"},
		{[]string{"--http", ":8080"}, "--insecure-http"},
		{[]string{"--http", "127.0.0.1:0", "--tls-cert", "c.pem"}, "give both --tls-cert and --tls-key"},
		{[]string{"--http", "nonsense"}, "is not HOST:PORT"},
		{[]string{"--agent", "demo-agent", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, "apply only with --http"},
	} {
		_, stderr, status := runBinary(t, append([]string{"serve"}, tt.args...)...)
		if status != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v: exit %d, %q; want 2 and %q", tt.args, status, stderr, tt.want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "alice"}, "is not an agent"},
		{[]string{"create", "nobody"}, "is not an agent"},
		{[]string{"create", "demo agent"}, "invisible or control"},
		{[]string{"create", "demo-agent", "--expires", "0d"}, "--expires"},
		{[]string{"create"}, "name the agent"},
		{[]string{"revoke"}, "name the key id"},
	} {
		_, stderr, status := runBinary(t, append([]string{"agent", "key", "--db", filepath.Join(t.TempDir(), "m.db")}[:2], append(tt.args, "--db", filepath.Join(t.TempDir(), "m.db"))...)...)
		if status != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("agent key %v: exit %d, %q; want 2 and %q", tt.args, status, stderr, tt.want)
		}
	}
}

// TestTypeScriptSDKHTTP: the official TypeScript SDK's Streamable HTTP
// client (client.mjs --http) with two keys on one server: each sees its
// own tools and gets its own decisions.
func TestTypeScriptSDKHTTP(t *testing.T) {
	node, clientDir := tsClient(t)
	f := newHTTPFiles(t)
	base := startHTTP(t, f)
	type report struct {
		Tools map[string]json.RawMessage `json:"tools"`
		Calls map[string]tsCall          `json:"calls"`
	}
	run := func(key string) report {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, filepath.Join(clientDir, "client.mjs"), "--http", base+"/mcp", key)
		cmd.Dir = clientDir
		var stderr syncBuffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("the TypeScript client failed: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
		}
		var r report
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("reading the client's report: %v\n%s", err, out)
		}
		return r
	}
	decision := func(c tsCall) string {
		var r actionResult
		if json.Unmarshal(c.Structured, &r) != nil || r.Decision == "" {
			_ = json.Unmarshal([]byte(c.Text), &r)
		}
		return r.Decision
	}
	names := func(r report) []string {
		var out []string
		for n := range r.Tools {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}

	demo := run(f.key(t, "demo-agent"))
	all := append(slices.Clone(lookupTools), actionTools...)
	slices.Sort(all)
	if got := names(demo); !slices.Equal(got, all) {
		t.Fatalf("demo-agent tools %v, want %v", got, all)
	}
	for label, want := range map[string]string{"refund_small": "allow", "refund_medium": "require_approval", "refund_large": "deny"} {
		if got := decision(demo.Calls[label]); got != want {
			t.Errorf("demo-agent %s: %+v, want %s", label, demo.Calls[label], want)
		}
	}
	lookup := run(f.key(t, "lookup-bot"))
	if got, want := names(lookup), []string{"get_action_status", "get_order"}; !slices.Equal(got, want) {
		t.Fatalf("lookup-bot tools %v, want %v", got, want)
	}
	for _, label := range []string{"refund_small", "refund_medium"} {
		if got := decision(lookup.Calls[label]); got == "allow" || got == "require_approval" {
			t.Errorf("lookup-bot %s: %+v, want a refusal", label, lookup.Calls[label])
		}
	}
}

// TestServeHTTPGracefulShutdown: SIGTERM while refunds are in flight
// stops accepting, lets every accepted call finish with a complete answer
// and a recorded outcome, and exits 0. A request either gets its full
// result or never reached the server (connection refused); no action is
// left with an attempt and no outcome.
func TestServeHTTPGracefulShutdown(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	key := f.key(t, "senior-bot")
	base, stop := startHTTPProc(t, f)
	// 8 agents call in a loop; SIGTERM comes once 16 answers are in, so
	// calls are in flight when it arrives.
	const clients = 8
	var done, failed atomic.Int64
	started := make(chan struct{}, 1000)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1002","amount":"1.00","reason":"goodwill","idempotency_key":"shutdown-` + strconv.Itoa(i) + "-" + strconv.Itoa(j) + `"}}}`
				req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
				req.Header.Set("Authorization", "Bearer "+key)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					failed.Add(1) // never handled: the audit check below proves it
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || !strings.Contains(string(b), `"decision"`) {
					t.Errorf("a call was cut off by the shutdown: status %d, err %v, body %.300s", res.StatusCode, err, b)
					return
				}
				done.Add(1)
				started <- struct{}{}
			}
		}()
	}
	for range 16 {
		<-started
	}
	if err := stop(); err != nil {
		t.Fatalf("serve --http did not exit 0 on SIGTERM with calls in flight: %v", err)
	}
	wg.Wait()
	out, stderr, err := runMandate(t, nil, "audit", "export", "--db", f.db)
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, stderr)
	}
	phases := map[string]map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct {
			ActionID string `json:"action_id"`
			Phase    string `json:"phase"`
			Decision string `json:"decision"`
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.ActionID != "" {
			if phases[r.ActionID] == nil {
				phases[r.ActionID] = map[string]bool{}
			}
			phases[r.ActionID][r.Phase] = true
			phases[r.ActionID][r.Decision] = true
		}
	}
	if int64(len(phases)) != done.Load() {
		t.Errorf("%d actions recorded, %d answered: every call the server took must have been answered", len(phases), done.Load())
	}
	for id, p := range phases {
		// An allowed call records its outcome; a pending one waits for a
		// person and has none yet.
		if p["attempt"] && p["allow"] && !p["outcome"] {
			t.Errorf("allowed action %s has an attempt and no outcome after shutdown", id)
		}
	}
	t.Logf("%d calls completed before and during shutdown; %d clients were then refused", done.Load(), failed.Load())
}

// TestServeHTTPTLS: with --tls-cert/--tls-key the endpoint is HTTPS, the
// challenge names the https resource metadata, and a key works.
func TestServeHTTPTLS(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	key := f.key(t, "demo-agent")
	certFile, keyFile, pool := selfSigned(t)
	base, _ := startHTTPProc(t, f, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("base %s", base)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	post := func(authz string) *http.Response {
		req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := post(""); res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != `Bearer resource_metadata="`+base+`/.well-known/oauth-protected-resource"` {
		t.Fatalf("no key over TLS: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if res := post("Bearer " + key); res.StatusCode != 200 {
		t.Fatalf("a key over TLS: %d", res.StatusCode)
	}
	// Plain HTTP to the TLS port gets Go's 400, never our content.
	if res, err := http.Get(strings.Replace(base, "https", "http", 1) + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatalf("plain HTTP was served on the TLS port")
		}
	}
}
