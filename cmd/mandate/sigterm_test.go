package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/storage"
)

// refundHoldProxy forwards to a backend service and holds every refund until
// release is closed, so that the test knows the refunds are in flight in
// Mandate, past their attempt record and waiting on the system of record.
type refundHoldProxy struct {
	proxy   *httputil.ReverseProxy
	arrived chan struct{} // one per refund that reached the proxy
	release chan struct{}
}

func (p *refundHoldProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refunds") {
		p.arrived <- struct{}{}
		<-p.release
	}
	p.proxy.ServeHTTP(w, r)
}

// TestServeHTTPSIGTERMInFlight: 50 agents, each with its own key, have a
// refund in flight over HTTP, all waiting on a slow system of record (a
// real `mandate store serve` behind a proxy that holds refunds), when
// serve gets SIGTERM. It stops accepting connections at once, lets the 50
// calls finish, answers each, records every outcome and exits 0: the
// audit trail holds an attempt and an executed outcome for each of the 50,
// none is left executing, the store made exactly those 50 refunds, and
// the hash chain verifies. (TestServeHTTPGracefulShutdown covers calls
// arriving while the server stops; this one, a known set in flight.)
func TestServeHTTPSIGTERMInFlight(t *testing.T) {
	t.Parallel()
	const n = 50
	dir := t.TempDir()
	f := newHTTPFiles(t)

	// n customers with one order each: customer_refunds_30d never trips,
	// and all are years old.
	var data store.ImportFile
	var rules strings.Builder
	rules.WriteString("\np, sigterm_role, refund_order, amount_base <= 50.00, allow\n")
	for i := range n {
		data.Customers = append(data.Customers, store.CustomerRecord{ID: fmt.Sprintf("cus_t%02d", i), Name: fmt.Sprintf("Customer %d", i),
			Email: fmt.Sprintf("c%d@example.com", i), CreatedAt: "2020-01-01T00:00:00Z"})
		data.Orders = append(data.Orders, store.OrderRecord{ID: fmt.Sprintf("ord_t%02d", i), CustomerID: fmt.Sprintf("cus_t%02d", i), Status: "delivered",
			Currency: "USD", Total: "100.00", Refunded: "0.00", CreatedAt: "2021-01-01T00:00:00Z"})
		fmt.Fprintf(&rules, "g, term-bot-%02d, sigterm_role\n", i)
	}
	b, _ := json.Marshal(data)
	dataFile := filepath.Join(dir, "data.json")
	pol, err := os.ReadFile(f.policy)
	if err != nil {
		t.Fatal(err)
	}
	for path, body := range map[string][]byte{dataFile: b, f.policy: append(pol, rules.String()...)} {
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	svcStore := filepath.Join(dir, "service-store.db")
	if out, stderr, err := runMandate(t, nil, "store", "import", "--store", svcStore, dataFile); err != nil {
		t.Fatalf("store import: %v\n%s%s", err, out, stderr)
	}
	svc := startStoreServe(t, svcStore, writeToken(t, dir, "tok"), "127.0.0.1:0")
	target, _ := url.Parse("http://" + svc.addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	hold := &refundHoldProxy{proxy: rp, arrived: make(chan struct{}, n), release: make(chan struct{})}
	var released sync.Once
	releaseAll := func() { released.Do(func() { close(hold.release) }) }
	t.Cleanup(releaseAll)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: hold}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	backendFile := filepath.Join(dir, "backend.yaml")
	u := "http://" + ln.Addr().String()
	if err := os.WriteFile(backendFile, []byte(fmt.Sprintf(`orders:    { http: { url: %q, token_file: token, timeout: 10s } }
customers: { http: { url: %q, token_file: token, timeout: 10s } }
payments:  { http: { url: %q, token_file: token, timeout: 10s } }
`, u, u, u)), 0o600); err != nil {
		t.Fatal(err)
	}

	// One key per agent, straight through the storage API (the CLI would
	// take a process each): a per-identity limit on calls in flight must
	// not be what this test measures.
	keys := make([]string, n)
	db, err := storage.Open(context.Background(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if keys[i], _, err = db.CreateAPIKey(context.Background(), fmt.Sprintf("term-bot-%02d", i), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	base, stop := startHTTPProc(t, f, "--backend", backendFile)
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund_order","arguments":{"order_id":"ord_t%02d","amount":"1.00","reason":"goodwill"}}}`, i)
			req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			req.Header.Set("Authorization", "Bearer "+keys[i])
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				answers[i].err = err
				return
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			answers[i] = answer{res.StatusCode, string(b), err}
		}()
	}
	for range n {
		<-hold.arrived
	}

	// All 50 wait on the backend. SIGTERM; once the listener is closed
	// (a new connection is refused), let the backend answer.
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = stop(); close(exited) }()
	for {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			break
		}
		c.Close()
		select {
		case <-exited:
			t.Fatalf("serve exited with 50 refunds held at the backend: %v", exitErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	releaseAll()
	<-exited
	if exitErr != nil {
		t.Fatalf("serve --http did not exit 0 on SIGTERM with %d refunds in flight: %v", n, exitErr)
	}
	wg.Wait()
	for i, a := range answers {
		var env struct {
			Result struct {
				StructuredContent actionResult `json:"structuredContent"`
			} `json:"result"`
		}
		_ = json.Unmarshal([]byte(strings.TrimPrefix(a.body, "data: ")), &env)
		if r := env.Result.StructuredContent; a.err != nil || a.status != 200 || r.Decision != "allow" || r.Status != "executed" {
			t.Errorf("refund %d, in flight at SIGTERM: status %d, err %v, body %.300s; want a complete answer, allowed and executed", i, a.status, a.err, a.body)
		}
	}

	db, err = storage.Open(context.Background(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	attempts, outcomes := map[string]bool{}, map[string]string{}
	if err := db.Records(context.Background(), storage.Filter{Tool: "refund_order"}, func(r *storage.Record) error {
		switch r.Phase {
		case storage.PhaseAttempt:
			attempts[r.ActionID] = true
		case storage.PhaseOutcome:
			outcomes[r.ActionID] = r.Outcome
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(attempts) != n {
		t.Errorf("%d refund attempts recorded, want %d", len(attempts), n)
	}
	for id := range attempts {
		if outcomes[id] != storage.StatusExecuted {
			t.Errorf("action %s: outcome %q after SIGTERM, want executed", id, outcomes[id])
		}
	}
	if left, err := db.ActionsWithStatus(context.Background(), storage.StatusExecuting, n); err != nil || len(left) > 0 {
		t.Errorf("%d actions left executing after SIGTERM (%v)", len(left), err)
	}
	if out, stderr, err := runMandate(t, nil, "audit", "verify", "--db", f.db); err != nil {
		t.Errorf("audit verify after SIGTERM: %v\n%s%s", err, out, stderr)
	}
	// The store made one refund of 1.00 per order, each under its
	// action's id, and no other.
	st, err := store.Open(svcStore)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for id := range attempts {
		if _, err := st.RefundByKey(context.Background(), id); err != nil {
			t.Errorf("action %s: no refund in the store under its key: %v", id, err)
		}
	}
	for i := range n {
		o, err := st.Order(context.Background(), fmt.Sprintf("ord_t%02d", i))
		if err != nil || o.Refunded.Minor != 100 {
			t.Errorf("ord_t%02d: refunded %+v (%v), want exactly 1.00", i, o.Refunded, err)
		}
	}
}
