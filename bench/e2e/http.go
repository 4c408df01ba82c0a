package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/mandatehq/mandate/storage"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// httpAgents is how many agents call `mandate serve --http` at once in the
// HTTP comparison, each with its own API key: a fleet sharing one endpoint.
const httpAgents = 64

// httpAgent names the i-th of them; setup grants each the bench role.
func httpAgent(i int) string { return fmt.Sprintf("bench-http-%02d", i) }

// httpAgentRules are the policy lines for the HTTP agents.
func httpAgentRules() string {
	var b strings.Builder
	for i := range httpAgents {
		fmt.Fprintf(&b, "g, %s, bench_agent\n", httpAgent(i))
	}
	return b.String()
}

// httpServer is a `mandate serve --http` child on a loopback port.
type httpServer struct {
	cmd    *exec.Cmd
	base   string
	stderr *lockedWriter
	done   chan struct{}
}

// startHTTP creates a key for each HTTP agent in mandate.db (through the
// storage API, as `mandate agent key create` does) and starts `mandate
// serve --http 127.0.0.1:0` on the same files as the stdio server.
func (b *bench) startHTTP(ctx context.Context) (*httpServer, []string, error) {
	db, err := storage.Open(ctx, b.mandateDB)
	if err != nil {
		return nil, nil, err
	}
	keys := make([]string, httpAgents)
	for i := range keys {
		if keys[i], _, err = db.CreateAPIKey(ctx, httpAgent(i), time.Time{}); err != nil {
			db.Close()
			return nil, nil, err
		}
	}
	if err := db.Close(); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(b.mandateBin, "serve", "--http", "127.0.0.1:0", "--db", b.mandateDB, "--store", b.mandateStore,
		"--model", b.modelPath, "--policy", b.policyPath, "--log-format", "json")
	cmd.Env = append(os.Environ(), "MANDATE_LOG_LEVEL=info")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	s := &httpServer{cmd: cmd, stderr: &lockedWriter{w: new(bytes.Buffer)}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			s.stderr.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving MCP over Streamable HTTP" {
				addr <- line.Addr
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			cmd.Wait()
			return nil, nil, fmt.Errorf("serve --http exited before listening:\n%s", s.stderr)
		}
		s.base = "http://" + a
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		return nil, nil, fmt.Errorf("serve --http did not listen within 30 s:\n%s", s.stderr)
	}
	return s, keys, nil
}

// stop sends SIGTERM and expects exit status 0.
func (s *httpServer) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	<-s.done
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("serve --http did not exit 0 on SIGTERM: %v\n%s", err, s.stderr)
	}
	return nil
}

// keyTransport sends one agent's key with every request, over a transport
// shared by all agents (kept-alive connections, as a client library keeps
// them).
type keyTransport struct {
	key  string
	next http.RoundTripper
}

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+k.key)
	return k.next.RoundTrip(r)
}

// connectHTTP opens one official-SDK Streamable HTTP session per key.
func connectHTTP(ctx context.Context, base string, keys []string) ([]*server, error) {
	shared := &http.Transport{MaxIdleConns: 2 * len(keys), MaxIdleConnsPerHost: 2 * len(keys), IdleConnTimeout: time.Minute}
	var out []*server
	for _, key := range keys {
		c := sdk.NewClient(&sdk.Implementation{Name: "mandate-e2e-bench", Version: "1"}, nil)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		session, err := c.Connect(cctx, &sdk.StreamableClientTransport{Endpoint: base + "/mcp",
			HTTPClient: &http.Client{Transport: keyTransport{key, shared}}, DisableStandaloneSSE: true}, nil)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("http: connect: %w", err)
		}
		out = append(out, &server{side: "mandate", session: session})
	}
	return out, nil
}

// httpTable is the HTTP-vs-stdio comparison's rows.
type httpTable struct{ rows []row }

// runHTTP compares guarded refunds over Streamable HTTP, from 1 and then
// 64 agents each with its own key and session, with refunds over stdio
// from 1 and 64 concurrent callers on one `mandate serve` process (the
// stdio server s), on the same database and store, in the same run.
func (b *bench) runHTTP(ctx context.Context, stdio *server, t *table) (*httpTable, error) {
	b.say("HTTP: %d API keys, serve --http on 127.0.0.1", httpAgents)
	hs, keys, err := b.startHTTP(ctx)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			hs.stop()
		}
	}()
	clients, err := connectHTTP(ctx, hs.base, keys)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range clients {
			c.session.Close()
		}
	}()
	old := b.cfg.duration
	b.cfg.duration = 300 * time.Millisecond
	b.measure(ctx, clients, httpAgents, b.refund(nil)) // warm up
	b.measure(ctx, []*server{stdio}, httpAgents, b.refund(nil))
	b.cfg.duration = old

	ht := &httpTable{}
	for _, c := range []int{1, httpAgents} {
		b.say("refunds over HTTP (%d agents) and over stdio (%d callers)", c, c)
		rh := b.measure(ctx, clients[:c], c, b.refund(nil))
		rs := b.measure(ctx, []*server{stdio}, c, b.refund(nil))
		what := fmt.Sprintf("refund, %d HTTP agents (own key each) vs 1 stdio process with %d callers", c, c)
		if c == 1 {
			what = "refund, 1 HTTP agent vs 1 stdio caller"
		}
		ht.rows = append(ht.rows,
			row{what + ": calls/s", fmt.Sprintf("%.0f", rh.perSec), fmt.Sprintf("%.0f", rs.perSec), ratio(rh.perSec, rs.perSec), ""},
			row{what + ": median", ms(rh.median), ms(rs.median), ratio(float64(rh.median), float64(rs.median)), ""},
			row{what + ": p99", ms(rh.p99), ms(rs.p99), ratio(float64(rh.p99), float64(rs.p99)), ""})
		t.fail(rh, rs)
	}
	for _, c := range clients {
		c.session.Close()
	}
	clients = nil
	stopped = true
	if err := hs.stop(); err != nil {
		return nil, err
	}
	return ht, nil
}

func (ht *httpTable) print(w io.Writer, b *bench) {
	fmt.Fprintf(w, "\nGuarded refunds over Streamable HTTP (loopback, official Go SDK client, one API key and session per agent) vs over stdio; %s per phase.\n\n", b.cfg.duration)
	fmt.Fprintln(w, "| what | HTTP | stdio | ratio |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range ht.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.what, r.mandate, r.bare, r.ratio)
	}
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// runHTTPOnly is `-only http`: the HTTP comparison alone, against one
// stdio `mandate serve`, then the same checks of the store and the audit
// trail as a full run.
func (b *bench) runHTTPOnly(ctx context.Context) error {
	m, err := b.start(ctx, "mandate")
	if err != nil {
		return err
	}
	t := &table{}
	ht, err := b.runHTTP(ctx, m, t)
	if cerr := m.session.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("mandate serve (stdio) did not exit cleanly: %v\n%s", cerr, m.stderr)
	}
	if err != nil {
		return err
	}
	ht.print(os.Stdout, b)
	b.say("checking the store and the audit trail against what the clients saw")
	if err := b.check(ctx); err != nil {
		return err
	}
	if t.failures > 0 {
		return fmt.Errorf("%d calls failed (first: %s)", t.failures, t.firstErr)
	}
	fmt.Println("\nCheck passed: the store and the audit trail hold exactly the refunds the clients saw succeed; the hash chain verifies.")
	return nil
}
