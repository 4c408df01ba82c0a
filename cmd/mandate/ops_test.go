package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// opsServer is a running `mandate serve --http` with its addresses.
type opsServer struct {
	base    string // http://ADDR of /mcp
	metrics string // http://ADDR of --metrics-listen, if given
	stderr  *syncBuffer
}

// startOps runs `mandate serve` with args (which pick --http and the
// rest) and waits until it listens; at cleanup it sends SIGTERM and
// expects exit 0.
func startOps(t *testing.T, args ...string) *opsServer {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--log-format", "json"}, args...)...)
	cmd.Env = childEnv(nil)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &opsServer{stderr: &syncBuffer{}}
	wantMetrics := strings.Contains(strings.Join(args, " "), "--metrics-listen")
	wantHTTP := strings.Contains(strings.Join(args, " "), "--http")
	up := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pipe)
		var once sync.Once
		for sc.Scan() {
			s.stderr.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line.Msg {
			case "serving MCP over Streamable HTTP":
				s.base = "http://" + line.Addr
			case "serving metrics":
				s.metrics = "http://" + line.Addr
			}
			if (s.base != "" || !wantHTTP) && (s.metrics != "" || !wantMetrics) {
				once.Do(func() { close(up) })
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-copied
		if err := cmd.Wait(); err != nil {
			t.Errorf("serve did not exit 0 on SIGTERM: %v", err)
		}
		if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("serve had a data race")
		}
		if t.Failed() {
			t.Logf("serve stderr:\n%s", s.stderr.String())
		}
	})
	select {
	case <-up:
	case <-copied:
		t.Fatalf("serve exited before listening:\n%s", s.stderr.String())
	}
	return s
}

// scrape returns the /metrics text at url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", res.StatusCode, b)
	}
	return string(b)
}

// metric is the value of the sample "name{labels}" in text (labels as
// Prometheus prints them: sorted, quoted; "" for none), or -1 if absent.
func metric(text, name, labels string) float64 {
	key := name
	if labels != "" {
		key += "{" + labels + "}"
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// mcpCall posts one stateless tools/call with key and returns the status,
// the Retry-After header and the body.
func mcpCall(t *testing.T, base, key, tool string, args map[string]any, headers ...string) (int, string, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": args}})
	req, err := http.NewRequest("POST", base+"/mcp", strings.NewReader(string(body)))
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err) // also from goroutines
		return 0, "", ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Retry-After"), string(b)
}

// TestMetricsShowDecisions: after an API-key client's allowed, pending and
// denied refunds and two refused requests, /metrics on the HTTP listener
// shows them by tool and effect, the auth failures by reason, the
// group-commit batch sizes, backend latency, pending approvals and the
// live policy; a broken policy edit counts as a reload failure.
func TestMetricsShowDecisions(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	demo, lookup := f.key(t, "demo-agent"), f.key(t, "lookup-bot")
	s := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy)

	before := scrape(t, s.base)
	if v := metric(before, "mandate_decisions_total", `effect="allow",tool="refund_order"`); v != -1 {
		t.Fatalf("a decision counted before any call: %v", v)
	}
	dc := connectMCPGo(t, s.base, "2025-11-25", map[string]string{"Authorization": "Bearer " + demo})
	lc := connectMCPGo(t, s.base, "2026-07-28", map[string]string{"Authorization": "Bearer " + lookup})
	for _, tt := range []struct {
		c                       mcpClient
		order, amount, decision string
	}{
		{dc, "ord_1001", "30.00", "allow"},
		{dc, "ord_1002", "150.00", "require_approval"},
		{dc, "ord_1002", "900.00", "deny"},
		{lc, "ord_1001", "1.00", "deny"},
	} {
		if got := tt.c.call(t, "refund_order", map[string]any{"order_id": tt.order, "amount": tt.amount, "reason": "Late delivery goodwill"}); got["decision"] != tt.decision {
			t.Fatalf("refund %s: %v, want %s", tt.amount, got, tt.decision)
		}
	}
	if got := lc.call(t, "get_order", map[string]any{"order_id": "ord_1001"}); got["id"] != "ord_1001" {
		t.Fatalf("get_order: %v", got)
	}
	if st, _, _ := mcpCall(t, s.base, "", "get_order", map[string]any{"order_id": "ord_1001"}); st != 401 {
		t.Fatalf("no key: %d, want 401", st)
	}
	if st, _, _ := mcpCall(t, s.base, "mk_000000000000_"+strings.Repeat("0", 64), "get_order", map[string]any{"order_id": "ord_1001"}); st != 401 {
		t.Fatalf("wrong key: %d, want 401", st)
	}

	m := scrape(t, s.base)
	for _, tt := range []struct {
		name, labels string
		want         float64
	}{
		{"mandate_decisions_total", `effect="allow",tool="refund_order"`, 1},
		{"mandate_decisions_total", `effect="require_approval",tool="refund_order"`, 1},
		{"mandate_decisions_total", `effect="deny",tool="refund_order"`, 2},
		{"mandate_decisions_total", `effect="allow",tool="get_order"`, 1},
		{"mandate_tool_call_duration_seconds_count", `tool="refund_order"`, 4},
		{"mandate_auth_failures_total", `reason="no bearer credentials"`, 1},
		{"mandate_auth_failures_total", `reason="unknown or wrong API key"`, 1},
		{"mandate_backend_call_duration_seconds_count", `operation="payments.refund"`, 1},
		{"mandate_pending_approvals", "", 1},
		{"mandate_policy_live", "", 1},
	} {
		if got := metric(m, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s{%s} = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if n := metric(m, "mandate_audit_commit_batch_size_count", ""); n < 5 {
		t.Errorf("mandate_audit_commit_batch_size_count = %v, want a commit per recorded write at least batched (>= 5)", n)
	}
	if n := metric(m, "mandate_backend_call_duration_seconds_count", `operation="orders.get"`); n < 4 {
		t.Errorf("orders.get calls = %v, want >= 4", n)
	}
	if !strings.Contains(m, "mandate_policy_info{version=\"") || metric(m, "go_goroutines", "") <= 0 {
		t.Errorf("no policy version or Go runtime metrics:\n%.2000s", m)
	}

	// A broken edit of the policy file is not loaded, and counted.
	if err := os.WriteFile(f.policy, []byte("p, support_agent, refund_order, amount <=, allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if metric(scrape(t, s.base), "mandate_policy_reload_failures_total", "") >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a broken policy edit was not counted as a reload failure")
		}
	}
}

// TestMetricsListen: --metrics-listen moves /metrics off the MCP listener,
// and serves it for a stdio server too.
func TestMetricsListen(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	s := startOps(t, "--http", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy)
	if res, err := http.Get(s.base + "/metrics"); err != nil || res.StatusCode != 404 {
		t.Fatalf("/metrics on the MCP listener with --metrics-listen: %v %v, want 404", res.StatusCode, err)
	}
	// /healthz and /readyz stay on the MCP listener, as README.md and
	// docs/deploy.md say, and are served on the metrics listener too.
	for _, base := range []string{s.base, s.metrics} {
		for _, path := range []string{"/healthz", "/readyz"} {
			res, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("%s%s with --metrics-listen: %d, want 200", base, path, res.StatusCode)
			}
		}
	}
	if m := scrape(t, s.metrics); metric(m, "mandate_policy_live", "") != 1 {
		t.Fatalf("metrics listener: no mandate_policy_live 1:\n%.1000s", m)
	}

	// stdio: the metrics listener is the only one; a call shows there.
	dir := t.TempDir()
	port := freePort(t)
	c := startServer(t, "2025-11-25", nil, "--agent", "demo-agent", "--db", filepath.Join(dir, "m.db"), "--store", filepath.Join(dir, "s.db"),
		"--metrics-listen", "127.0.0.1:"+port)
	var got map[string]any
	decode(t, call(t, c, "get_order", map[string]any{"order_id": "ord_1001"}), &got)
	m := scrape(t, "http://127.0.0.1:"+port)
	if v := metric(m, "mandate_decisions_total", `effect="allow",tool="get_order"`); v != 1 {
		t.Fatalf("stdio serve --metrics-listen: get_order allow = %v, want 1", v)
	}
}

// freePort is a TCP port free a moment ago on 127.0.0.1.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

// readyz returns /readyz's status and the checks it names as failed.
func readyz(t *testing.T, base string) (int, []string) {
	t.Helper()
	res, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ans readyAnswer
	if err := json.NewDecoder(res.Body).Decode(&ans); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	var failed []string
	for _, f := range ans.Failed {
		failed = append(failed, f.Check)
	}
	return res.StatusCode, failed
}

// waitReady polls /readyz (cached for readyTTL) until it answers status
// naming check as failed ("" when ready).
func waitReady(t *testing.T, base string, status int, check string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, failed := readyz(t, base)
		if st == status && (check == "" && len(failed) == 0 || check != "" && strings.Contains(strings.Join(failed, ","), check)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %v, want %d naming %q", st, failed, status, check)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// contractBackend starts `mandate store serve` on a copy of the demo
// store and returns it and a backend file naming proxyURL (or the service
// itself when "") for every capability, with a long timeout.
func contractBackend(t *testing.T, dir string, proxy func(target string) string) (*storeServer, string) {
	t.Helper()
	tokenFile := writeToken(t, dir, "ops-test-token")
	ss := startStoreServe(t, filepath.Join(dir, "backend-store.db"), tokenFile, "127.0.0.1:0")
	u := "http://" + ss.addr
	if proxy != nil {
		u = proxy(u)
	}
	path := filepath.Join(dir, "backend.yaml")
	body := fmt.Sprintf("orders:    { http: { url: %q, token_file: %q, timeout: 30s } }\ncustomers: { http: { url: %q, token_file: %q, timeout: 30s } }\npayments:  { http: { url: %q, token_file: %q, timeout: 30s } }\n",
		u, tokenFile, u, tokenFile, u, tokenFile)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return ss, path
}

// TestReadyz: ready when the database takes writes, the policy is live and
// the HTTP backend answers; 503 naming the check when the database file is
// made immutable, and when the backend service is stopped; ready again once
// each is fixed.
//
// Unwritable as root: permission bits do not bind root, and an open file
// descriptor keeps its write access anyway. The immutable attribute
// (chattr +i, ext4 and most Linux file systems) does both: writes through
// descriptors already open fail with EPERM, as they would on a disk gone
// read-only. The write probe commits a real write, so it sees that. Where
// chattr is not allowed (not root, a file system without the attribute)
// that part is skipped and says so.
func TestReadyz(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	dir := t.TempDir()
	ss, backendFile := contractBackend(t, dir, nil)
	s := startOps(t, "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy, "--backend", backendFile)
	waitReady(t, s.base, 200, "")

	t.Run("database", func(t *testing.T) {
		files := []string{f.db, f.db + "-wal"}
		if out, err := exec.Command("chattr", append([]string{"+i"}, files...)...).CombinedOutput(); err != nil {
			t.Skipf("chattr +i is not available here (%v: %s); cannot make the database unwritable for root", err, out)
		}
		undo := func() { _ = exec.Command("chattr", append([]string{"-i"}, files...)...).Run() }
		defer undo()
		waitReady(t, s.base, 503, "database")
		undo()
		waitReady(t, s.base, 200, "")
	})

	t.Run("backend", func(t *testing.T) {
		addr := ss.addr
		ss.stop(t)
		waitReady(t, s.base, 503, "backend")
		// The same address again, as a restarted service would be.
		startStoreServe(t, filepath.Join(dir, "backend-store.db"), filepath.Join(dir, "token"), addr)
		waitReady(t, s.base, 200, "")
	})
}

// TestOpsFlags: mistakes in the operations flags are usage errors.
func TestOpsFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--http", "127.0.0.1:0", "--max-concurrent-per-agent", "0"}, "--max-concurrent-per-agent"},
		{[]string{"--http", "127.0.0.1:0", "--max-concurrent-per-agent", "many"}, "--max-concurrent-per-agent"},
		{[]string{"--agent", "demo-agent", "--max-concurrent-per-agent", "4"}, "apply only with --http"},
		{[]string{"--agent", "demo-agent", "--allowed-host", "a.example"}, "apply only with --http"},
		{[]string{"--http", "127.0.0.1:0", "--allowed-host", "https://a.example"}, "without scheme or port"},
		{[]string{"--http", "127.0.0.1:0", "--metrics-listen", "9090"}, "--metrics-listen"},
	} {
		_, stderr, status := runBinary(t, append([]string{"serve"}, tt.args...)...)
		if status != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v: exit %d, %q; want 2 and %q", tt.args, status, stderr, tt.want)
		}
	}
}
