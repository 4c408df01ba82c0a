package main

// The "done when": orders and customers from `mandate store serve`,
// payments from Stripe (stripe-mock behind a recording proxy), the README's
// refunds, and the audit trail showing them.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mandatehq/mandate/backend/stripe"
	"github.com/mandatehq/mandate/internal/stripemock"
	"github.com/mark3labs/mcp-go/mcp"
)

// stripeCall is a request that reached Stripe.
type stripeCall struct {
	method, path, key string
	form              url.Values
}

// stripeRecorder forwards to stripe-mock and keeps what it forwarded.
type stripeRecorder struct {
	mu    sync.Mutex
	calls []stripeCall
	next  http.Handler
}

func (s *stripeRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	s.mu.Lock()
	s.calls = append(s.calls, stripeCall{r.Method, r.URL.Path, r.Header.Get("Idempotency-Key"), form})
	s.mu.Unlock()
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	s.next.ServeHTTP(w, r)
}

// refunds lists "key amount payment_intent action_id" for each refund sent.
func (s *stripeRecorder) refunds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.calls {
		if c.method == http.MethodPost && c.path == "/v1/refunds" {
			out = append(out, fmt.Sprintf("%s %s %s %s", c.key, c.form.Get("amount"), c.form.Get("payment_intent"), c.form.Get("metadata[mandate_action_id]")))
		}
	}
	return out
}

func TestStripePaymentsWalkthrough(t *testing.T) {
	t.Parallel()
	mock := stripemock.Start(t)
	target, _ := url.Parse(mock)
	rec := &stripeRecorder{next: httputil.NewSingleHostReverseProxy(target)}
	proxy := httptest.NewServer(rec)
	defer proxy.Close()

	dir := t.TempDir()
	svc := startStoreServe(t, filepath.Join(dir, "shop.db"), writeToken(t, dir, "orders-token"), "127.0.0.1:0")
	backendFile := filepath.Join(dir, "backend.yaml")
	if err := os.WriteFile(backendFile, []byte(fmt.Sprintf(`orders:    { http:   { url: "http://%s", token_env: "ORDERS_TOKEN" } }
customers: { http:   { url: "http://%s", token_env: "ORDERS_TOKEN" } }
payments:  { stripe: { secret_key_env: "STRIPE_SECRET_KEY", api_url: %q } }
`, svc.addr, svc.addr, proxy.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ORDERS_TOKEN=orders-token", "STRIPE_SECRET_KEY=sk_test_123mandate"}
	dbPath := filepath.Join(dir, "mandate.db")

	out, errOut, err := runMandate(t, env, "backend", "check", "--backend", backendFile, "--order", "ord_1001")
	if err != nil || !strings.Contains(out, "all checks passed") || !strings.Contains(out, "payment pi_demo_ord_1001 (2500.00 USD received") || !strings.Contains(out, stripe.APIVersion) {
		t.Fatalf("backend check: %v\n%s%s", err, out, errOut)
	}

	// A wrong orders token fails the orders line only: Stripe's line checks
	// Stripe alone rather than repeat the orders' refusal (a new user read
	// it as Stripe refusing the key).
	badEnv := []string{"ORDERS_TOKEN=wrong-token", "STRIPE_SECRET_KEY=sk_test_123mandate"}
	out, errOut, err = runMandate(t, badEnv, "backend", "check", "--backend", backendFile, "--order", "ord_1001")
	var ordersLine, paymentsLine string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "orders "):
			ordersLine = l
		case strings.HasPrefix(l, "payments "):
			paymentsLine = l
		}
	}
	if err == nil || !strings.Contains(ordersLine, "FAIL") || !strings.Contains(paymentsLine, "ok:") {
		t.Fatalf("backend check with a wrong orders token: %v; want orders FAIL and payments ok\n%s%s", err, out, errOut)
	}

	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, env, "--agent", "demo-agent", "--db", dbPath, "--backend", backendFile)
	refund := func(order, amount string) actionResult {
		var r actionResult
		decode(t, call(t, c, "refund_order", map[string]any{"order_id": order, "amount": amount, "reason": "walkthrough"}), &r)
		return r
	}
	allowed := refund("ord_1001", "30.00")
	if allowed.Status != "executed" {
		t.Fatalf("30.00: %+v", allowed)
	}
	pending := refund("ord_1002", "150.00")
	if pending.Status != "pending" {
		t.Fatalf("150.00: %+v", pending)
	}
	if denied := refund("ord_1002", "900.00"); denied.Status != "denied" {
		t.Fatalf("900.00: %+v", denied)
	}
	want := []string{fmt.Sprintf("%s 3000 pi_demo_ord_1001 %s", allowed.ActionID, allowed.ActionID)}
	if got := rec.refunds(); !slices.Equal(got, want) {
		t.Fatalf("refunds sent to Stripe before approval:\n%v\nwant only the allowed one, keyed by its action id:\n%v", got, want)
	}
	addUsers(t, dbPath, "alice") // alice proves who she is, as every approver must
	approveEnv := append(append([]string{}, env...), "MANDATE_ADMIN_PASSWORD="+cliPassword)
	if out, errOut, err := runMandate(t, approveEnv, "approvals", "approve", pending.ActionID, "--as", "alice", "--comment", "ok", "--db", dbPath, "--backend", backendFile); err != nil {
		t.Fatalf("approvals approve: %v\n%s%s", err, out, errOut)
	}
	want = append(want, fmt.Sprintf("%s 15000 pi_demo_ord_1002 %s", pending.ActionID, pending.ActionID))
	if got := rec.refunds(); !slices.Equal(got, want) {
		t.Fatalf("refunds sent to Stripe after approval:\n%v\nwant:\n%v", got, want)
	}
	// Orders and customers stayed on the store service: its own refunds
	// table is untouched, since the money moved in Stripe.
	if got := orderState(t, filepath.Join(dir, "shop.db"), "ord_1001"); got != "processing refunded 0.00 USD" {
		t.Fatalf("the store service refunded money itself: %s", got)
	}

	out, errOut, err = runMandate(t, nil, "audit", "export", "--db", dbPath)
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, errOut)
	}
	executed := map[string]bool{}
	for _, r := range checkExport(t, out) {
		if strings.Contains(string(r["outcome"]), "executed") {
			executed[strings.Trim(string(r["action_id"]), `"`)] = true
		}
	}
	if !executed[allowed.ActionID] || !executed[pending.ActionID] {
		t.Fatalf("the audit trail does not show both refunds executed (%s, %s):\n%s", allowed.ActionID, pending.ActionID, out)
	}
}
