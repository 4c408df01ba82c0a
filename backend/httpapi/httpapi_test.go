package httpapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
	"gopkg.in/yaml.v3"
)

// serve starts the contract's server over a fresh demo store, through wrap
// when given, and returns a client for it and the store behind it.
func serve(t *testing.T, token string, wrap ...func(http.Handler) http.Handler) (*httpapi.Client, *store.Store, *httptest.Server) {
	t.Helper()
	st, _, err := store.OpenSeeded(context.Background(), filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := &httpapi.Server{Backend: backend.Backend{Payments: st, Orders: st, Customers: st}, Token: token}
	h := srv.Handler()
	for _, w := range wrap {
		h = w(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &httpapi.Client{BaseURL: hs.URL, Token: token, Retries: 1, Name: "the test service"}, st, hs
}

func TestClientServerRoundTrip(t *testing.T) {
	ctx := context.Background()
	c, st, _ := serve(t, "s3cret")

	o, err := c.Order(ctx, "ord_1001")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := st.Order(ctx, "ord_1001")
	if o.ID != want.ID || o.Total != want.Total || o.Refunded != want.Refunded || o.Status != want.Status || !o.CreatedAt.Equal(want.CreatedAt) {
		t.Fatalf("order over HTTP = %+v, in the store %+v", o, want)
	}
	if _, err := c.Order(ctx, "ord_nope"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("unknown order: err = %v, want not_found", err)
	}

	cu, err := c.CustomerByEmail(ctx, "ADA@example.com")
	if err != nil || cu.ID != "cus_ada" {
		t.Fatalf("CustomerByEmail = %+v, %v", cu, err)
	}
	if _, err := c.CustomerByEmail(ctx, "nobody@example.com"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("unknown email: err = %v, want not_found", err)
	}

	amount := mandate.Money{Minor: 3000, Currency: "USD"}
	r1, err := c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: amount, Reason: "late", IdempotencyKey: "act_1"})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: amount, Reason: "late", IdempotencyKey: "act_1"})
	if err != nil || r2.ID != r1.ID {
		t.Fatalf("repeat with the same key = %+v, %v; want refund %s again", r2, err, r1.ID)
	}
	if o, _ := st.Order(ctx, "ord_1001"); o.Refunded.Minor != 3000 {
		t.Fatalf("refunded after two calls with one key = %d, want 3000", o.Refunded.Minor)
	}
	_, err = c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 100, Currency: "USD"}, IdempotencyKey: "act_1"})
	if mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("same key, other amount: err = %v, want conflict", err)
	}
	_, err = c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 1 << 40, Currency: "USD"}, IdempotencyKey: "act_2"})
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(mandate.ErrorMessage(err), "exceeds") {
		t.Fatalf("over-refund: err = %v, want conflict saying it exceeds", err)
	}
	got, err := c.RefundByKey(ctx, "act_1")
	if err != nil || got.ID != r1.ID || got.Amount != amount {
		t.Fatalf("RefundByKey = %+v, %v", got, err)
	}
	if _, err := c.RefundByKey(ctx, "act_never"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("RefundByKey of an unused key: err = %v, want not_found", err)
	}

	co, err := c.CancelOrder(ctx, backend.CancelRequest{OrderID: "ord_1001", Reason: "asked", IdempotencyKey: "act_3"})
	if err != nil || co.Status != backend.StatusCancelled {
		t.Fatalf("CancelOrder = %+v, %v", co, err)
	}
	if co, err := c.CancellationByKey(ctx, "act_3"); err != nil || co.ID != "ord_1001" {
		t.Fatalf("CancellationByKey = %+v, %v", co, err)
	}
	// Mandate never spends one action id on two kinds of change, so an
	// answer of another kind is no answer: not known, never not_found.
	if _, err := c.CancellationByKey(ctx, "act_1"); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("CancellationByKey of a refund's key: err = %v, want unavailable", err)
	}

	cu, err = c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: "phone", Value: "+1 202 555 0100", IdempotencyKey: "act_4"})
	if err != nil || cu.Phone != "+1 202 555 0100" {
		t.Fatalf("UpdateCustomer = %+v, %v", cu, err)
	}
	if cu, err := c.UpdateByKey(ctx, "act_4"); err != nil || cu.Phone != "+1 202 555 0100" {
		t.Fatalf("UpdateByKey = %+v, %v", cu, err)
	}
	_, err = c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: "phone", Value: "not a phone", IdempotencyKey: "act_5"})
	if mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("bad phone: err = %v, want invalid", err)
	}
}

func TestServerRefusesWithoutToken(t *testing.T) {
	ctx := context.Background()
	_, _, hs := serve(t, "s3cret")
	for _, token := range []string{"", "wrong", "s3cret-and-more"} {
		c := &httpapi.Client{BaseURL: hs.URL, Token: token}
		_, err := c.Order(ctx, "ord_1001")
		if mandate.ErrorCode(err) != mandate.EUNAVAILABLE || !strings.Contains(mandate.ErrorMessage(err), "credentials") {
			t.Fatalf("token %q: err = %v, want unavailable naming the credentials", token, err)
		}
	}
}

func TestProblemsAndMissingKey(t *testing.T) {
	_, _, hs := serve(t, "")
	for _, tc := range []struct {
		method, path, key, body string
		status                  int
		code                    string
	}{
		{"GET", "/orders/ord_nope", "", "", 404, "not_found"},
		{"POST", "/orders/ord_1001/refunds", "", `{"amount":"1.00","currency":"USD","reason":"x"}`, 422, "invalid"},
		{"POST", "/orders/ord_1001/refunds", "k1", `{"amount":1,"currency":"USD"}`, 422, "invalid"},
		{"POST", "/orders/ord_1001/refunds", "k1", `{"amount":"1.00","currency":"USD","extra":1}`, 422, "invalid"},
		{"PATCH", "/customers/cus_ada", "k2", `{"phone":"+1 202 555 0100","name":"X"}`, 422, "invalid"},
		{"GET", "/operations/unused", "", "", 404, "not_found"},
		{"GET", "/customers", "", "", 422, "invalid"},
		{"GET", "/nowhere", "", "", 404, "not_found"},
	} {
		req, _ := http.NewRequest(tc.method, hs.URL+tc.path, strings.NewReader(tc.body))
		if tc.key != "" {
			req.Header.Set("Idempotency-Key", tc.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s, want %d problem+json", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status)
		}
	}
}

// TestClientRetries: a read that meets a 503 is tried again; a problem that
// says the request was wrong is not.
func TestClientRetries(t *testing.T) {
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if strings.Contains(r.URL.Path, "bad") {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(422)
			w.Write([]byte(`{"type":"about:blank","title":"x","status":422,"detail":"amount is wrong","code":"invalid"}`))
			return
		}
		if n == 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"ord_1","customer_id":"cus_1","status":"pending","currency":"EUR","total":"10.00","refunded":"0.00","created_at":"2026-01-01T00:00:00Z"}`))
	}))
	defer hs.Close()
	c := &httpapi.Client{BaseURL: hs.URL, Retries: 2}
	o, err := c.Order(context.Background(), "ord_1")
	if err != nil || o.Total != (mandate.Money{Minor: 1000, Currency: "EUR"}) || calls.Load() != 2 {
		t.Fatalf("Order after a 503 = %+v, %v after %d calls; want 10.00 EUR after 2", o, err, calls.Load())
	}
	calls.Store(0)
	_, err = c.Order(context.Background(), "bad")
	if mandate.ErrorCode(err) != mandate.EINVALID || mandate.ErrorMessage(err) != "amount is wrong" || calls.Load() != 1 {
		t.Fatalf("422: err = %v after %d calls; want invalid with the detail, once", err, calls.Load())
	}
}

// TestOperationOutsideContract: only a 404 from GET /operations/{key} says
// nothing was done with the key. Recovery believes not_found (it records the
// action failed, gives the limits back, and the agent may try again with a
// new key), so a 200 that does not name a refund made with this key must
// leave the question open (unavailable), or one refund is paid twice.
func TestOperationOutsideContract(t *testing.T) {
	refund := `"refund":{"id":"re_1","order_id":"ord_1","amount":"5.00","currency":"EUR","reason":"x","created_at":"2026-01-01T00:00:00Z"}`
	for _, c := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"empty object", `{}`, 200, mandate.EUNAVAILABLE},
		{"kind in other case", `{"idempotency_key":"act_1","kind":"Refund",` + refund + `}`, 200, mandate.EUNAVAILABLE},
		{"kind misspelt", `{"idempotency_key":"act_1","kind":"refunds",` + refund + `}`, 200, mandate.EUNAVAILABLE},
		{"another kind", `{"idempotency_key":"act_1","kind":"cancel","order":{"id":"ord_1"}}`, 200, mandate.EUNAVAILABLE},
		{"another key", `{"idempotency_key":"act_2","kind":"refund",` + refund + `}`, 200, mandate.EUNAVAILABLE},
		{"no key", `{"kind":"refund",` + refund + `}`, 200, mandate.EUNAVAILABLE},
		{"not JSON", `[]`, 200, mandate.EUNAVAILABLE},
		{"the contract's not found", `{"type":"about:blank","title":"x","status":404,"detail":"no operation","code":"not_found"}`, 404, mandate.ENOTFOUND},
		{"found", `{"idempotency_key":"act_1","kind":"refund",` + refund + `}`, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/operations/act_1" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				if c.status != 200 {
					w.Header().Set("Content-Type", "application/problem+json")
				}
				w.WriteHeader(c.status)
				w.Write([]byte(c.body))
			}))
			defer hs.Close()
			cl := &httpapi.Client{BaseURL: hs.URL}
			r, err := cl.RefundByKey(context.Background(), "act_1")
			if got := mandate.ErrorCode(err); got != c.want {
				t.Fatalf("RefundByKey = %+v, %v: code %q, want %q", r, err, got, c.want)
			}
			if c.want == "" && r.ID != "re_1" {
				t.Fatalf("RefundByKey = %+v, want re_1", r)
			}
		})
	}
}

// TestClientFollowsNoRedirect: a service that answers a change with a
// redirect (here to plain http on the same host) gets neither the request
// again nor Mandate's token there; the change is not done by this request
// (unavailable).
func TestClientFollowsNoRedirect(t *testing.T) {
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the redirect target got the token: %q", r.Header.Get("Authorization"))
		}
	}))
	defer elsewhere.Close()
	for _, status := range []int{301, 302, 303, 307, 308} {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+r.URL.Path, status)
		}))
		c := &httpapi.Client{BaseURL: hs.URL, Token: "s3cret-token"}
		_, err := c.Refund(context.Background(), backend.RefundRequest{OrderID: "ord_1", Amount: mandate.Money{Minor: 100, Currency: "EUR"}, Reason: "x", IdempotencyKey: "act_1"})
		hs.Close()
		if mandate.ErrorCode(err) != mandate.EUNAVAILABLE || !strings.Contains(err.Error(), "redirect") {
			t.Errorf("HTTP %d: err = %v, want unavailable naming the redirect", status, err)
		}
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("%d requests followed a redirect", n)
	}
}

// TestAnswerAboutAnotherObject: an answer about another order or customer
// than the one asked for is outside the contract (unavailable): decided on,
// its facts would be another customer's; and a cancel answered with an
// order that is not cancelled is not "done".
func TestAnswerAboutAnotherObject(t *testing.T) {
	order := func(id, status string) string {
		return `{"id":"` + id + `","customer_id":"cus_1","status":"` + status + `","currency":"EUR","total":"10.00","refunded":"0.00","created_at":"2026-01-01T00:00:00Z"}`
	}
	customer := func(id string) string {
		return `{"id":"` + id + `","name":"Ada","email":"ada@example.com","created_at":"2024-01-01T00:00:00Z"}`
	}
	answers := map[string]string{
		"GET /orders/ord_1":         order("ord_2", "delivered"),
		"GET /orders/ord_ok":        order("ord_ok", "delivered"),
		"POST /orders/ord_1/cancel": order("ord_1", "pending"),
		"POST /orders/ord_2/cancel": order("ord_9", "cancelled"),
		"GET /customers/cus_1":      customer("cus_2"),
		"PATCH /customers/cus_1":    customer("cus_2"),
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := answers[r.Method+" "+r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
	defer hs.Close()
	c := &httpapi.Client{BaseURL: hs.URL}
	ctx := context.Background()
	if _, err := c.Order(ctx, "ord_ok"); err != nil {
		t.Fatalf("the right order: %v", err)
	}
	for what, err := range map[string]error{
		"an order asked for, another answered": func() error { _, err := c.Order(ctx, "ord_1"); return err }(),
		"a cancel answered not cancelled": func() error {
			_, err := c.CancelOrder(ctx, backend.CancelRequest{OrderID: "ord_1", Reason: "x", IdempotencyKey: "act_1"})
			return err
		}(),
		"a cancel answered with another order": func() error {
			_, err := c.CancelOrder(ctx, backend.CancelRequest{OrderID: "ord_2", Reason: "x", IdempotencyKey: "act_2"})
			return err
		}(),
		"a customer asked for, another answered": func() error { _, err := c.Customer(ctx, "cus_1"); return err }(),
		"an update answered with another customer": func() error {
			_, err := c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_1", Field: "phone", Value: "+1 202 555 0100", IdempotencyKey: "act_3"})
			return err
		}(),
	} {
		if mandate.ErrorCode(err) != mandate.EUNAVAILABLE || !strings.Contains(err.Error(), "outside the contract") {
			t.Errorf("%s: err = %v, want unavailable, outside the contract", what, err)
		}
	}
}

// TestOpenAPIListsEveryRoute keeps the published contract and the server in
// step: every route served is in api/backend.openapi.yaml and back.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	buf, err := os.ReadFile(filepath.Join("..", "..", "api", "backend.openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(buf, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	var got []string
	for path, ops := range doc.Paths {
		for method := range ops {
			got = append(got, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(got)
	want := []string{
		"GET /customers", "GET /customers/{id}", "GET /operations/{idempotency_key}", "GET /orders/{id}",
		"PATCH /customers/{id}", "POST /orders/{id}/cancel", "POST /orders/{id}/refunds",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("operations in the OpenAPI file:\n%v\nwant (the server's routes):\n%v", got, want)
	}
}

// TestRefundOrderOverTheWire: the order a refund left crosses the contract
// both ways. The server sends what the store reported, the client passes it
// on, and both leave it out on a repeat and on a lookup by key.
func TestRefundOrderOverTheWire(t *testing.T) {
	ctx := context.Background()
	c, st, hs := serve(t, "")

	// The server's side: the raw answer carries the order, refunded included.
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/orders/ord_1001/refunds",
		strings.NewReader(`{"amount":"30.00","currency":"USD","reason":"late"}`))
	req.Header.Set("Idempotency-Key", "raw_1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var raw httpapi.Refund
	err = json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST refund: %d, %v", resp.StatusCode, err)
	}
	if raw.Order == nil || raw.Order.ID != "ord_1001" || raw.Order.Refunded != "30.00" || raw.Order.Currency != "USD" {
		t.Fatalf("the server's refund carries order %+v, want ord_1001 with 30.00 USD refunded", raw.Order)
	}

	// The client's side: a fresh refund has the order as the store has it now.
	amount := mandate.Money{Minor: 1000, Currency: "USD"}
	r, err := c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: amount, IdempotencyKey: "act_1"})
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := st.Order(ctx, "ord_1001")
	if r.Order == nil || r.Order.ID != stored.ID || r.Order.Refunded != stored.Refunded || r.Order.Total != stored.Total ||
		r.Order.Status != stored.Status || r.Order.CustomerID != stored.CustomerID || !r.Order.CreatedAt.Equal(stored.CreatedAt) {
		t.Fatalf("refund's order over HTTP = %+v, in the store %+v", r.Order, stored)
	}
	if r.Order.Refunded.Minor != 4000 {
		t.Fatalf("refunded = %d after 30.00 and 10.00, want 4000", r.Order.Refunded.Minor)
	}
	again, err := c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: amount, IdempotencyKey: "act_1"})
	if err != nil || again.ID != r.ID || again.Order != nil {
		t.Fatalf("repeat = %+v (order %+v), %v; want refund %s without an order", again, again.Order, err, r.ID)
	}
	if byKey, err := c.RefundByKey(ctx, "act_1"); err != nil || byKey.ID != r.ID || byKey.Order != nil {
		t.Fatalf("RefundByKey = %+v, %v; want refund %s without an order", byKey, err, r.ID)
	}
}

// TestClientRefundOrder: the client keeps a refund's order only when it can
// be the order this refund left, and never fails the refund over it.
func TestClientRefundOrder(t *testing.T) {
	const refund = `"id":"re_1","order_id":"ord_1","amount":"5.00","currency":"EUR","reason":"","idempotency_key":"k","created_at":"2026-01-01T00:00:00Z"`
	order := func(id, currency, total, refunded string) string {
		return `,"order":{"id":"` + id + `","customer_id":"cus_1","status":"delivered","currency":"` + currency +
			`","total":"` + total + `","refunded":"` + refunded + `","created_at":"2026-01-01T00:00:00Z"}`
	}
	for _, tc := range []struct {
		name, extra  string
		wantRefunded int64 // -1: no order
	}{
		{"absent", "", -1},
		{"consistent", order("ord_1", "EUR", "10.00", "7.00"), 700},
		{"exactly the refund", order("ord_1", "EUR", "10.00", "5.00"), 500},
		{"another order", order("ord_2", "EUR", "10.00", "7.00"), -1},
		{"another currency", order("ord_1", "USD", "10.00", "7.00"), -1},
		{"less refunded than the refund", order("ord_1", "EUR", "10.00", "4.99"), -1},
		{"more refunded than the total", order("ord_1", "EUR", "10.00", "10.01"), -1},
		{"malformed money", order("ord_1", "EUR", "ten", "7.00"), -1},
		{"null", `,"order":null`, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte(`{` + refund + tc.extra + `}`))
			}))
			defer hs.Close()
			c := &httpapi.Client{BaseURL: hs.URL}
			r, err := c.Refund(context.Background(), backend.RefundRequest{
				OrderID: "ord_1", Amount: mandate.Money{Minor: 500, Currency: "EUR"}, IdempotencyKey: "k"})
			if err != nil || r.ID != "re_1" {
				t.Fatalf("Refund = %+v, %v; want re_1 whatever its order", r, err)
			}
			switch {
			case tc.wantRefunded < 0 && r.Order != nil:
				t.Fatalf("order = %+v, want none", r.Order)
			case tc.wantRefunded >= 0 && (r.Order == nil || r.Order.Refunded != mandate.Money{Minor: tc.wantRefunded, Currency: "EUR"}):
				t.Fatalf("order = %+v, want refunded %d EUR", r.Order, tc.wantRefunded)
			}
		})
	}
}

// TestRefusedRequestLogsItsRoute: a request refused for its token is logged
// with the route it asked for (the pattern, without ids), not only its
// method: auth runs before the mux has matched a pattern.
func TestRefusedRequestLogsItsRoute(t *testing.T) {
	st, _, err := store.OpenSeeded(context.Background(), filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var logs strings.Builder
	srv := &httpapi.Server{Backend: backend.Backend{Payments: st, Orders: st, Customers: st}, Token: "s3cret",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	c := &httpapi.Client{BaseURL: hs.URL, Token: "wrong"}
	if _, err := c.Order(context.Background(), "ord_1001"); err == nil {
		t.Fatal("a wrong token was accepted")
	}
	if !strings.Contains(logs.String(), `path="GET /orders/{id}"`) || strings.Contains(logs.String(), "ord_1001") {
		t.Fatalf("the refusal's log names no route, or names the order:\n%s", logs.String())
	}
}
