package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
)

// TestClientGoneMidCall: a stdio client that goes away while a refund is at
// the backend closes the pipes of serve's stdout and stderr, as a crashed
// client does. serve is not killed by SIGPIPE at its next write: the
// refund's outcome is recorded and serve exits 0 (a review saw it killed,
// the action left executing for another server's recovery).
func TestClientGoneMidCall(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc := startStoreServe(t, filepath.Join(dir, "shop.db"), writeToken(t, dir, "orders-token"), "127.0.0.1:0")
	target, err := url.Parse("http://" + svc.addr)
	if err != nil {
		t.Fatal(err)
	}
	reached, release := make(chan struct{}, 1), make(chan struct{})
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refunds") {
			select {
			case reached <- struct{}{}:
			default:
			}
			<-release // the refund is held at the backend while the client goes
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	dbPath := filepath.Join(dir, "mandate.db")
	cmd := exec.Command(bin, "serve", "--agent", "demo-agent", "--db", dbPath, "--backend", httpBackendFile(t, dir, proxy.URL))
	cmd.Env = childEnv([]string{"ORDERS_TOKEN=orders-token"})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	errW.Close()
	logged := make(chan string, 1)
	go func() { b, _ := io.ReadAll(errR); logged <- string(b) }()

	fmt.Fprintf(stdin, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_1001","amount":"30.00","reason":"client gone test"}}}
`)
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("no answer to initialize: %v", err)
	}
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the refund never reached the backend")
	}
	// The client goes: every pipe to it closes.
	stdout.Close()
	errR.Close()
	stdin.Close()
	close(release)
	released = true

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve, its client gone mid-call: %v; want exit 0 with the outcome recorded", err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("serve did not exit after its client went")
	}

	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var phases []string
	if err := db.Records(context.Background(), storage.Filter{Tool: "refund_order"}, func(r *storage.Record) error {
		phases = append(phases, r.Phase+":"+r.Outcome)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(phases, " "); got != "attempt: outcome:executed" {
		t.Fatalf("the refund's records: %q; want its attempt and its executed outcome", got)
	}
}

// TestPipedIntoHeadEndsQuietly: only serve ignores SIGPIPE. A command
// piped into a reader that stops early (audit export | head) ends at once
// and quietly, as Unix tools do, not with "write /dev/stdout: broken
// pipe" and exit status 1.
func TestPipedIntoHeadEndsQuietly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if err := db.Append(context.Background(), &storage.Record{Agent: "demo-agent", Tool: "get_order", Phase: storage.PhaseAttempt,
			Args: []byte(fmt.Sprintf(`{"order_id":"ord_%d"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	cmd := exec.Command(bin, "audit", "export", "--db", dbPath)
	cmd.Env = childEnv(nil)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	out.Close() // head has read its line
	cmd.Wait()
	if strings.Contains(errOut.String(), "broken pipe") {
		t.Fatalf("audit export into a closed pipe complained:\n%s", errOut.String())
	}
}

// TestSIGTERMWithStdoutUnread: a stdio client that stops reading stdout
// but keeps it open fills the pipe, and serve's next answer blocks. A
// SIGTERM still stops serve within its grace, exit 0 (a review saw it
// wait for the client for ever), and every answer that did reach stdout
// is in the audit trail.
func TestSIGTERMWithStdoutUnread(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	cmd := exec.Command(bin, "serve", "--agent", "demo-agent", "--db", dbPath, "--store", filepath.Join(dir, "store.db"))
	cmd.Env = childEnv(nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	cmd.Stdout = outW
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	// Far more answers than a pipe holds (64 KiB on Linux): once stdout is
	// full, serve stops reading stdin and the writer blocks too, so it runs
	// on its own and counts the lines it got through.
	var sent atomic.Int64
	go func() {
		fmt.Fprintf(stdin, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
`)
		for i := 1; i <= 3000; i++ {
			if _, err := fmt.Fprintf(stdin, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"ord_1001"}}}`+"\n", i); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	// Wait until the writer has been stuck for a second past what the stdin
	// pipe alone holds (about 580 of these lines): serve has read calls,
	// its answers fill stdout, and it has stopped reading.
	deadline := time.Now().Add(60 * time.Second)
	for last, still := int64(-1), 0; still < 10 || last < 700; {
		time.Sleep(100 * time.Millisecond)
		if n := sent.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
		if sent.Load() == 3000 {
			t.Fatal("serve read all 3000 calls with nobody reading its answers; want it stuck on a full stdout")
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never got stuck")
		}
	}
	time.Sleep(200 * time.Millisecond) // its next answer is blocked now
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve, stdout unread, on SIGTERM: %v; want exit 0\n%s", err, errOut.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("serve did not stop within 30 s of SIGTERM while its client kept stdout open unread\n%s", errOut.String())
	}
	stdin.Close()

	// Every answer that reached the client is in the trail.
	answers := 0
	sc := bufio.NewScanner(outR)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"structuredContent"`) {
			answers++
		}
	}
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recorded := 0
	if err := db.Records(context.Background(), storage.Filter{Tool: "get_order"}, func(r *storage.Record) error {
		recorded++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if answers == 0 || recorded < answers {
		t.Fatalf("%d get_order answers reached stdout, %d recorded in the trail; want every answer shown recorded", answers, recorded)
	}
}
