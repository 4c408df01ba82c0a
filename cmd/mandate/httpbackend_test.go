package main

// The HTTP backend against `mandate store serve` in another process: the
// contract's client in `mandate serve`, the contract's server in front of a
// real store file, a real socket between them.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate/backend/store"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// storeServer is a running `mandate store serve`.
type storeServer struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
}

// startStoreServe runs `mandate store serve` on listen (127.0.0.1:0 for any
// port) and waits for the address it prints.
func startStoreServe(t *testing.T, storePath, tokenFile, listen string) *storeServer {
	t.Helper()
	s := &storeServer{stderr: &syncBuffer{}}
	s.cmd = exec.Command(bin, "store", "serve", "--store", storePath, "--listen", listen, "--token-file", tokenFile)
	s.cmd.Env = childEnv(nil)
	s.cmd.Stderr = s.stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop(t) })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("store serve printed no address: %v\nstderr:\n%s", err, s.stderr.String())
	}
	_, addr, ok := strings.Cut(strings.TrimSpace(line), " on http://")
	if !ok {
		t.Fatalf("store serve printed %q, want \"serving FILE on http://ADDR\"", line)
	}
	s.addr = addr
	return s
}

// kill stops the service the hard way, as a crash would.
func (s *storeServer) kill(t *testing.T) {
	t.Helper()
	if s.cmd.ProcessState != nil {
		return
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill store serve: %v\nstderr:\n%s", err, s.stderr.String())
	}
	s.cmd.Wait()
}

// stop ends the service with SIGTERM and expects a clean exit.
func (s *storeServer) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("store serve did not exit cleanly on SIGTERM: %v\nstderr:\n%s", err, s.stderr.String())
	}
	if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
		t.Errorf("store serve had a data race:\n%s", s.stderr.String())
	}
}

// httpBackendFile writes a backend file naming url for every capability,
// with the token read from ORDERS_TOKEN.
func httpBackendFile(t *testing.T, dir, url string) string {
	t.Helper()
	path := filepath.Join(dir, "backend.yaml")
	body := fmt.Sprintf(`# every capability from one contract service
orders:    { http: { url: %q, token_env: ORDERS_TOKEN, timeout: 2s } }
customers: { http: { url: %q, token_env: ORDERS_TOKEN, timeout: 2s } }
payments:  { http: { url: %q, token_env: ORDERS_TOKEN, timeout: 2s } }
`, url, url, url)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeToken(t *testing.T, dir, token string) string {
	t.Helper()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// orderState reads an order straight from a store file, as the service's
// own operator would.
func orderState(t *testing.T, storePath, id string) string {
	t.Helper()
	st, err := store.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o, err := st.Order(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s refunded %s %s", o.Status, o.Refunded, o.Refunded.Currency)
}

// walkthrough plays the README's refunds (30.00 allowed, 150.00 pending then
// approved by alice, 900.00 refused) against a server started with
// serveArgs, and returns the decisions and the store's orders afterwards.
func walkthrough(t *testing.T, env []string, dbPath, storePath string, serveArgs, approveArgs []string) []string {
	t.Helper()
	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, env, append([]string{"--agent", "demo-agent", "--db", dbPath}, serveArgs...)...)
	var got []string
	var pending string
	for _, step := range []struct{ order, amount string }{{"ord_1001", "30.00"}, {"ord_1002", "150.00"}, {"ord_1002", "900.00"}} {
		var r actionResult
		decode(t, call(t, c, "refund_order", map[string]any{"order_id": step.order, "amount": step.amount, "reason": "walkthrough"}), &r)
		got = append(got, fmt.Sprintf("%s %s: %s/%s", step.order, step.amount, r.Decision, r.Status))
		if r.Status == "pending" {
			pending = r.ActionID
		}
	}
	got = append(got, "before approval: ord_1002 "+orderState(t, storePath, "ord_1002"))
	if pending == "" {
		t.Fatalf("no refund was pending: %v", got)
	}
	// alice proves who she is, as every approver must.
	addUsers(t, dbPath, "alice")
	approveEnv := append(append([]string{}, env...), "MANDATE_ADMIN_PASSWORD="+cliPassword)
	if out, errOut, err := runMandate(t, approveEnv, append([]string{"approvals", "approve", pending, "--as", "alice", "--comment", "ok", "--db", dbPath}, approveArgs...)...); err != nil {
		t.Fatalf("approvals approve: %v\n%s%s", err, out, errOut)
	}
	var st actionStatus
	decode(t, call(t, c, "get_action_status", map[string]any{"action_id": pending}), &st)
	got = append(got, "approved refund: "+st.Status,
		"after: ord_1001 "+orderState(t, storePath, "ord_1001"), "after: ord_1002 "+orderState(t, storePath, "ord_1002"))
	return got
}

// TestHTTPBackendWalkthrough: the README's walkthrough changes the store
// behind `mandate store serve` exactly as it changes the embedded store in
// process.
func TestHTTPBackendWalkthrough(t *testing.T) {
	t.Parallel()
	inProcess := t.TempDir()
	want := walkthrough(t, nil, filepath.Join(inProcess, "mandate.db"), filepath.Join(inProcess, "store.db"),
		[]string{"--store", filepath.Join(inProcess, "store.db")}, []string{"--store", filepath.Join(inProcess, "store.db")})
	if !strings.Contains(strings.Join(want, "\n"), "after: ord_1002 delivered refunded 150.00") {
		t.Fatalf("the in-process walkthrough did not approve the 150.00 refund:\n%s", strings.Join(want, "\n"))
	}

	dir := t.TempDir()
	storePath := filepath.Join(dir, "service-store.db")
	svc := startStoreServe(t, storePath, writeToken(t, dir, "s3cret-token"), "127.0.0.1:0")
	backendFile := httpBackendFile(t, dir, "http://"+svc.addr)
	env := []string{"ORDERS_TOKEN=s3cret-token"}
	// No --store: were the backend file ignored, the embedded store.db
	// would change instead of the service's, and the states would differ.
	got := walkthrough(t, env, filepath.Join(dir, "mandate.db"), storePath,
		[]string{"--backend", backendFile}, []string{"--backend", backendFile})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("over HTTP:\n%s\n\nin process:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestHTTPBackendWrongToken: a service that refuses Mandate's token refuses
// every action, with a message saying why, and each refusal is audited.
func TestHTTPBackendWrongToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storePath := filepath.Join(dir, "service-store.db")
	svc := startStoreServe(t, storePath, writeToken(t, dir, "right-token"), "127.0.0.1:0")
	backendFile := httpBackendFile(t, dir, "http://"+svc.addr)
	env := []string{"ORDERS_TOKEN=wrong-token"}
	dbPath := filepath.Join(dir, "mandate.db")
	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, env, "--agent", "senior-bot", "--db", dbPath, "--backend", backendFile)
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"refund_order", map[string]any{"order_id": "ord_1001", "amount": "5.00", "reason": "x"}},
		{"cancel_order", map[string]any{"order_id": "ord_1004", "reason": "x"}},
		{"update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+12025550100", "reason": "x"}},
	}
	for _, tc := range calls {
		res := call(t, c, tc.tool, tc.args)
		var r actionResult
		decode(t, res, &r)
		if !res.IsError || r.Decision != "deny" || !strings.Contains(r.Message, "refused Mandate's credentials") {
			t.Fatalf("%s with a wrong token: isError=%v decision=%q message=%q; want a deny naming the credentials", tc.tool, res.IsError, r.Decision, r.Message)
		}
	}
	if got := orderState(t, storePath, "ord_1001"); got != "processing refunded 0.00 USD" {
		t.Fatalf("ord_1001 after refused refunds: %s", got)
	}
	out, errOut, err := runMandate(t, nil, "audit", "export", "--db", dbPath)
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, errOut)
	}
	recs := checkExport(t, out)
	refused := 0
	for _, r := range recs {
		if strings.Contains(string(r["decision"]), "deny") && strings.Contains(string(r["outcome"]), "refused") {
			refused++
		}
	}
	if refused != len(calls) {
		t.Fatalf("%d refused actions in the audit trail, want %d:\n%s", refused, len(calls), out)
	}
	if !strings.Contains(svc.stderr.String(), "refused a request without a valid bearer token") {
		t.Fatalf("store serve did not log the refused requests:\n%s", svc.stderr.String())
	}
}

// crashProxy sits between Mandate and `mandate store serve`. On the first
// refund it runs crash, which kills the service; the request then fails the
// way a crash fails it: the connection drops with no answer.
type crashProxy struct {
	target *url.URL
	crash  func(forward func() bool)
	once   sync.Once
}

func (p *crashProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	proxy := httputil.NewSingleHostReverseProxy(p.target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // the service is down on purpose
	hit := false
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refunds") {
		p.once.Do(func() { hit = true })
	}
	if !hit {
		proxy.ServeHTTP(w, r)
		return
	}
	p.crash(func() bool {
		// Forward to the service and drop its answer.
		rec := &discardWriter{h: http.Header{}}
		proxy.ServeHTTP(rec, r)
		return rec.status == http.StatusCreated
	})
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

type discardWriter struct {
	h      http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(s int)           { d.status = s }

// TestHTTPBackendKilledMidRefund: the service dies while a refund is in
// flight, before it committed or after it committed but before it answered,
// and comes back on the same address. The action ends executed or failed as
// the store says, never twice, never unknown.
func TestHTTPBackendKilledMidRefund(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		committed bool
	}{{"before commit", false}, {"after commit", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			storePath := filepath.Join(dir, "service-store.db")
			token := writeToken(t, dir, "tok")
			svc := startStoreServe(t, storePath, token, "127.0.0.1:0")
			target, _ := url.Parse("http://" + svc.addr)
			proxy := &crashProxy{target: target}
			proxy.crash = func(forward func() bool) {
				if tc.committed && !forward() {
					t.Errorf("the service did not make the refund before it was killed")
				}
				svc.kill(t)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hs := &http.Server{Handler: proxy}
			go hs.Serve(ln)
			t.Cleanup(func() { hs.Close() })

			backendFile := httpBackendFile(t, dir, "http://"+ln.Addr().String())
			env := []string{"ORDERS_TOKEN=tok"}
			c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, env, "--agent", "senior-bot", "--db", filepath.Join(dir, "mandate.db"),
				"--backend", backendFile, "--backend-timeout", "1s", "--recover-after", "3s")
			var r actionResult
			decode(t, call(t, c, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "12.34", "reason": "crash test"}), &r)
			if r.Decision != "allow" || r.Status != "executing" {
				t.Fatalf("refund while the service died: decision %q status %q (%s); want allow, left executing for reconciliation", r.Decision, r.Status, r.Message)
			}
			// The service comes back on the same address, with the same file.
			startStoreServe(t, storePath, token, svc.addr)
			st := waitSettled(t, c, r.ActionID)
			want, state := "failed", "processing refunded 0.00 USD"
			if tc.committed {
				want, state = "executed", "processing refunded 12.34 USD"
			}
			if st != want {
				t.Fatalf("after recovery the refund is %q, want %q", st, want)
			}
			if got := orderState(t, storePath, "ord_1001"); got != state {
				t.Fatalf("ord_1001 after recovery: %s, want %s (exactly once)", got, state)
			}
		})
	}
}

// waitSettled polls get_action_status until the action is no longer
// executing; the server's reconciliation loop settles it.
func waitSettled(t *testing.T, c *client.Client, id string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st actionStatus
		decode(t, call(t, c, "get_action_status", map[string]any{"action_id": id}), &st)
		if st.Status != "executing" {
			return st.Status
		}
		if time.Now().After(deadline) {
			t.Fatalf("action %s still executing after a minute: never reconciled", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBackendFileStartupErrors: a bad backend file stops serve, and every
// other command that reaches a backend, at start with the file and key
// named; nothing is served.
func TestBackendFileStartupErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"literal secret", `orders: { http: { url: "http://127.0.0.1:9", token: "abc" } }`, "orders.http.token: line 1: a literal secret is not allowed"},
		{"unknown key", "payments:\n  stripe: { secret_key_env: K, api_ur: \"http://127.0.0.1:9\" }\n", `line 2: unknown key "api_ur" in stripe`},
		{"missing variable", `customers: { http: { url: "http://127.0.0.1:9", token_env: MANDATE_TEST_UNSET } }`, "customers.http.token_env: environment variable MANDATE_TEST_UNSET is not set"},
		{"bad url", `orders: { http: { url: "orders.internal", token_env: K } }`, `orders.http.url: "orders.internal" is not an http:// or https:// URL`},
		// A review's file: refunds went to the local store.db, answered as done.
		{"payments left on the store", `orders: { http: { url: "http://127.0.0.1:9", token_env: K } }`, "payments: refunds would be made in the embedded store, which does not hold your orders (they are at http://127.0.0.1:9)"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"serve", "--agent", "demo-agent", "--db", filepath.Join(dir, "m.db"), "--backend", path},
			{"backend", "check", "--backend", path},
		} {
			out, errOut, err := runMandate(t, []string{"K=sk_test_123", "MANDATE_BACKEND=" + path}, args...)
			if err == nil || out != "" || !strings.Contains(errOut, "backend file "+path+": ") || !strings.Contains(errOut, tc.want) {
				t.Errorf("%s: mandate %s: err %v, stdout %q, stderr %q; want exit 1 naming %q", tc.name, args[0], err, out, errOut, tc.want)
			}
		}
	}
}
