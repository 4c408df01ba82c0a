package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// lateProxy holds every refund on its way to the service until release is
// closed, then forwards it even though its sender is gone (a buffering
// proxy), and reports the service's status on answered.
type lateProxy struct {
	target   string
	arrived  chan struct{}
	release  chan struct{}
	answered chan int
}

func (p *lateProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	held := r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refunds")
	if held {
		p.arrived <- struct{}{}
		<-p.release
	}
	out, _ := http.NewRequestWithContext(context.Background(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if held {
		p.answered <- resp.StatusCode
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// TestLateRefundAfterRecovery: serve is killed while its refund is held
// at a proxy on its way to `mandate store serve`; another serve on the
// same database reconciles it as not done; then the held refund is
// released and reaches the service. The service refuses it (409, past its
// Mandate-Not-After), the order is not refunded, and the trail says the
// action failed, not done, exactly once.
func TestLateRefundAfterRecovery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "service-store.db")
	token := writeToken(t, dir, "tok")
	svc := startStoreServe(t, storePath, token, "127.0.0.1:0")
	proxy := &lateProxy{target: "http://" + svc.addr, arrived: make(chan struct{}, 4), release: make(chan struct{}), answered: make(chan int, 4)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: proxy}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	released := false
	t.Cleanup(func() {
		if !released {
			close(proxy.release)
		}
	})
	backendFile := httpBackendFile(t, dir, "http://"+ln.Addr().String())
	env := []string{"ORDERS_TOKEN=tok"}
	args := []string{"--agent", "senior-bot", "--db", dbPath, "--backend", backendFile, "--backend-timeout", "1s", "--recover-after", "3s"}
	before := orderState(t, storePath, "ord_1001")

	// The first serve sends the refund and is killed while it is held.
	var cmd *exec.Cmd
	c, err := client.NewStdioMCPClientWithOptions(bin, env, append([]string{"serve"}, args...),
		transport.WithCommandFunc(func(ctx context.Context, command string, env, args []string) (*exec.Cmd, error) {
			cmd = exec.CommandContext(ctx, command, args...)
			cmd.Env = childEnv(env)
			return cmd, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "mandate-late", Version: "test"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	go c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_1001", "amount": "12.34", "reason": "held at a proxy"}}})
	<-proxy.arrived
	cmd.Process.Kill()
	c.Close()

	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	left, err := db.ActionsWithStatus(context.Background(), storage.StatusExecuting, 10)
	if err != nil || len(left) != 1 {
		t.Fatalf("after the kill: %v, %v; want the refund left executing", left, err)
	}
	id := left[0].ID

	// Another serve reconciles it while the request is still held.
	c2 := startServer(t, mcp.LATEST_PROTOCOL_VERSION, env, args...)
	if st := waitSettled(t, c2, id); st != "failed" {
		t.Fatalf("after recovery the refund is %q, want failed (not done)", st)
	}

	// The held request now reaches the service, after its deadline.
	released = true
	close(proxy.release)
	select {
	case status := <-proxy.answered:
		if status != http.StatusConflict {
			t.Fatalf("the late refund was answered %d, want 409 deadline_passed", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held refund was never answered")
	}
	if got := orderState(t, storePath, "ord_1001"); got != before {
		t.Fatalf("ord_1001 after the late refund arrived: %s, want %s (no refund: recovery recorded it not done)", got, before)
	}
	var outcomes []string
	if err := db.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
		if r.Phase == storage.PhaseOutcome {
			outcomes = append(outcomes, r.Outcome+": "+r.Error)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(outcomes) != 1 || !strings.HasPrefix(outcomes[0], "failed: ") || !strings.Contains(outcomes[0], "not done") {
		t.Fatalf("outcomes of %s: %q, want exactly one failed, not done", id, outcomes)
	}
}
