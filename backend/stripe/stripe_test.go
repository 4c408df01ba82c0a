package stripe_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/backend/stripe"
	"github.com/mandatehq/mandate/internal/stripemock"
)

// shop is a store with one USD order paid with a PaymentIntent, and one
// without a payment reference.
func shop(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, err = st.Import(context.Background(), []byte(`{
  "customers": [{"id": "cus_1", "name": "Ada", "email": "ada@example.com", "created_at": "2024-01-01T00:00:00Z"}],
  "orders": [
    {"id": "ord_1", "customer_id": "cus_1", "status": "delivered", "currency": "USD", "total": "2500.00", "payment_ref": "pi_test_1", "created_at": "2026-01-01T00:00:00Z"},
    {"id": "ord_2", "customer_id": "cus_1", "status": "delivered", "currency": "USD", "total": "10.00", "created_at": "2026-01-01T00:00:00Z"}
  ]}`))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// recorded is one request as it reached Stripe.
type recorded struct {
	Method, Path, Key, Version, Auth string
	Form                             url.Values
}

// recorder is a reverse proxy that keeps every request it forwards.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	next http.Handler
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(body))
	for k, v := range req.URL.Query() {
		form[k] = v
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.Path, req.Header.Get("Idempotency-Key"),
		req.Header.Get("Stripe-Version"), req.Header.Get("Authorization"), form})
	r.mu.Unlock()
	req.Body = io.NopCloser(strings.NewReader(string(body)))
	r.next.ServeHTTP(w, req)
}

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

// TestAgainstStripeMock: the requests Mandate sends to Stripe's own stub,
// as a recording proxy sees them.
func TestAgainstStripeMock(t *testing.T) {
	base := stripemock.Start(t)
	target, _ := url.Parse(base)
	rec := &recorder{next: httputil.NewSingleHostReverseProxy(target)}
	proxy := httptest.NewServer(rec)
	defer proxy.Close()

	st := shop(t)
	p := stripe.New(stripe.Config{SecretKey: "sk_test_mandate", APIURL: proxy.URL}, st)
	orders := stripe.Orders{Orders: st, Payments: p}
	ctx := context.Background()

	o, err := orders.Order(ctx, "ord_1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Total != (mandate.Money{Minor: 250000, Currency: "USD"}) || o.Refunded.Minor != 0 || o.PaymentRef != "pi_test_1" {
		t.Fatalf("order with Stripe's facts = %+v; want 2500.00 USD received and nothing refunded, as the fixtures say", o)
	}

	r, err := p.Refund(ctx, backend.RefundRequest{OrderID: "ord_1", Amount: mandate.Money{Minor: 3000, Currency: "USD"},
		Reason: "scratched", IdempotencyKey: "act_0123456789abcdef", Agent: "demo-agent"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.ID, "re_") || r.Amount != (mandate.Money{Minor: 3000, Currency: "USD"}) || r.OrderID != "ord_1" || r.IdempotencyKey != "act_0123456789abcdef" {
		t.Fatalf("refund = %+v", r)
	}
	// Stripe knows the payment, not the order: it cannot say how the order stands.
	if r.Order != nil {
		t.Fatalf("refund's order = %+v, want none from Stripe", r.Order)
	}
	var post *recorded
	for _, q := range rec.all() {
		if q.Version != stripe.APIVersion || q.Auth != "Bearer sk_test_mandate" {
			t.Errorf("%s %s: Stripe-Version %q, Authorization %q; want the pinned %s and the key", q.Method, q.Path, q.Version, q.Auth, stripe.APIVersion)
		}
		if q.Method == http.MethodPost {
			if post != nil {
				t.Fatalf("two refund requests for one refund: %+v", rec.all())
			}
			post = &q
		}
	}
	if post == nil {
		t.Fatal("no refund request reached Stripe")
	}
	for field, want := range map[string]string{
		"path":                        "/v1/refunds",
		"Idempotency-Key":             "act_0123456789abcdef",
		"payment_intent":              "pi_test_1",
		"amount":                      "3000",
		"metadata[mandate_action_id]": "act_0123456789abcdef",
		"metadata[mandate_order_id]":  "ord_1",
		"metadata[mandate_agent]":     "demo-agent",
	} {
		got := post.Form.Get(field)
		switch field {
		case "path":
			got = post.Path
		case "Idempotency-Key":
			got = post.Key
		}
		if got != want {
			t.Errorf("refund request %s = %q, want %q", field, got, want)
		}
	}

	// A refund in another currency than the payment's is refused before
	// anything is sent.
	n := len(rec.all())
	_, err = p.Refund(ctx, backend.RefundRequest{OrderID: "ord_1", Amount: mandate.Money{Minor: 3000, Currency: "EUR"}, IdempotencyKey: "act_eur"})
	if mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("EUR refund of a USD payment: err = %v, want invalid", err)
	}
	for _, q := range rec.all()[n:] {
		if q.Method == http.MethodPost {
			t.Fatalf("a refund request was sent for a currency mismatch")
		}
	}
	if _, err := p.Refund(ctx, backend.RefundRequest{OrderID: "ord_2", Amount: mandate.Money{Minor: 100, Currency: "USD"}, IdempotencyKey: "act_2"}); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("order without payment_ref: err = %v, want conflict", err)
	}
	// stripe-mock keeps no state: no refund carries our metadata.
	if _, err := p.RefundByKey(ctx, "act_0123456789abcdef"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("RefundByKey on stripe-mock: err = %v, want not_found", err)
	}
}

const piJSON = `{"id":"pi_test_1","object":"payment_intent","amount":250000,"amount_received":250000,"currency":"usd","status":"succeeded","latest_charge":{"id":"ch_1","object":"charge","amount":250000,"amount_refunded":5000,"currency":"usd"}}`

func refundJSON(key string, amount int64, status string) string {
	return fmt.Sprintf(`{"id":"re_%s","object":"refund","amount":%d,"currency":"usd","status":%q,"created":1700000000,"payment_intent":"pi_test_1","metadata":{"mandate_action_id":%q,"mandate_order_id":"ord_1"}}`,
		key, amount, status, key)
}

func stripeError(status int, typ, code, msg string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"type":%q,"code":%q,"message":%q}}`, typ, code, msg)
	}
}

// TestErrorMapping: Stripe-shaped errors from a local server become results
// that say what happened to the money, retried only when Stripe says a
// retry is safe, always with the same key.
func TestErrorMapping(t *testing.T) {
	ok := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, refundJSON("act_1", 3000, "succeeded"))
	}
	withHeader := func(h, v string, f func(http.ResponseWriter)) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) { w.Header().Set(h, v); f(w) }
	}
	hang := func(w http.ResponseWriter) { time.Sleep(2 * time.Second); ok(w) }
	inProgress := stripeError(409, "idempotency_error", "", "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): act_1. Please try again later.")
	for _, tc := range []struct {
		name      string
		responses []func(http.ResponseWriter) // per attempt; the last repeats
		code      string
		message   string
		attempts  int
		unauth    bool
	}{
		{"already refunded", []func(http.ResponseWriter){stripeError(400, "invalid_request_error", "charge_already_refunded", "Charge ch_1 has already been refunded.")},
			mandate.ECONFLICT, "Charge ch_1 has already been refunded.", 1, false},
		{"amount too large", []func(http.ResponseWriter){stripeError(400, "invalid_request_error", "amount_too_large", "Refund amount ($30.00) is greater than unrefunded amount on charge ($20.00)")},
			mandate.ECONFLICT, "is greater than unrefunded amount", 1, false},
		{"card failure", []func(http.ResponseWriter){stripeError(402, "card_error", "expired_card", "Your card has expired.")},
			mandate.ECONFLICT, "the card or bank refused", 1, false},
		{"429 with Stripe-Should-Retry", []func(http.ResponseWriter){withHeader("Stripe-Should-Retry", "true", stripeError(429, "api_error", "rate_limit", "Too many requests")), ok},
			"", "", 2, false},
		{"500 then success", []func(http.ResponseWriter){stripeError(500, "api_error", "", "Something went wrong"), ok},
			"", "", 2, false},
		{"500 Stripe says not to retry", []func(http.ResponseWriter){withHeader("Stripe-Should-Retry", "false", stripeError(500, "api_error", "", "boom"))},
			mandate.EUNAVAILABLE, "Stripe is unavailable (HTTP 500", 1, false},
		{"500 every time", []func(http.ResponseWriter){stripeError(503, "api_error", "", "down")},
			mandate.EUNAVAILABLE, "Stripe is unavailable (HTTP 503", 3, false},
		{"bad key", []func(http.ResponseWriter){stripeError(401, "invalid_request_error", "", "Invalid API Key provided")},
			mandate.EUNAVAILABLE, "Stripe refused Mandate's API key", 1, true},
		{"hang past the timeout", []func(http.ResponseWriter){hang},
			mandate.EUNAVAILABLE, "Stripe did not answer in time", 1, false},
		// Stripe answers 409 idempotency_error to a request whose key's first
		// request is still being carried out: undecided, not refused. It is
		// retried with the same key and, when the retries run out, left
		// unknown (unavailable), never a conflict ("nothing was changed").
		{"a retry meets the first still in progress", []func(http.ResponseWriter){hang, inProgress, ok},
			"", "", 3, false},
		{"409 in progress every time", []func(http.ResponseWriter){inProgress},
			mandate.EUNAVAILABLE, "Stripe could not say what became of the request", 3, false},
		{"409 retried even when Stripe-Should-Retry says false", []func(http.ResponseWriter){withHeader("Stripe-Should-Retry", "false", inProgress), ok},
			"", "", 2, false},
		{"key reused with other parameters", []func(http.ResponseWriter){stripeError(400, "idempotency_error", "", "Keys for idempotent requests can only be used with the same parameters they were first used with.")},
			mandate.EUNAVAILABLE, "Stripe could not say what became of the request", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var keys []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet {
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, piJSON)
					return
				}
				mu.Lock()
				keys = append(keys, r.Header.Get("Idempotency-Key"))
				n := len(keys)
				mu.Unlock()
				tc.responses[min(n, len(tc.responses))-1](w)
			}))
			defer srv.Close()
			p := stripe.New(stripe.Config{SecretKey: "sk_test_x", APIURL: srv.URL, Retries: 2, Backoff: time.Millisecond, Timeout: 300 * time.Millisecond}, shop(t))
			// Like the guard: one deadline for the whole call, retries
			// included; the hang must not retry past it.
			ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
			defer cancel()
			r, err := p.Refund(ctx, backend.RefundRequest{OrderID: "ord_1", Amount: mandate.Money{Minor: 3000, Currency: "USD"}, IdempotencyKey: "act_1"})
			if mandate.ErrorCode(err) != tc.code || !strings.Contains(mandate.ErrorMessage(err), tc.message) {
				t.Fatalf("err = %v; want code %q with %q", err, tc.code, tc.message)
			}
			if tc.code == "" && r.ID != "re_act_1" {
				t.Fatalf("refund = %+v", r)
			}
			if errors.Is(err, backend.ErrUnauthorized) != tc.unauth {
				t.Fatalf("err = %v: ErrUnauthorized in chain = %v, want %v", err, !tc.unauth, tc.unauth)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.name != "hang past the timeout" && len(keys) != tc.attempts {
				t.Fatalf("%d attempts, want %d", len(keys), tc.attempts)
			}
			for _, k := range keys {
				if k != "act_1" {
					t.Fatalf("attempt with Idempotency-Key %q, want act_1 every time: %v", k, keys)
				}
			}
		})
	}
}

// TestRefundByKey: reconciliation finds the refund by its metadata, and
// treats a failed refund as not done.
func TestRefundByKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/refunds" || r.URL.Query().Get("created[gte]") == "" {
			t.Errorf("reconciliation asked %s %s; want a list of recent refunds", r.Method, r.URL)
		}
		list := map[string]any{"object": "list", "has_more": false, "url": "/v1/refunds", "data": []json.RawMessage{
			json.RawMessage(refundJSON("act_other", 100, "succeeded")),
			json.RawMessage(refundJSON("act_done", 4200, "succeeded")),
			json.RawMessage(refundJSON("act_failed", 100, "failed")),
		}}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(list)
	}))
	defer srv.Close()
	p := stripe.New(stripe.Config{SecretKey: "sk_test_x", APIURL: srv.URL}, shop(t))
	ctx := context.Background()
	r, err := p.RefundByKey(ctx, "act_done")
	if err != nil || r.ID != "re_act_done" || r.Amount != (mandate.Money{Minor: 4200, Currency: "USD"}) || r.OrderID != "ord_1" {
		t.Fatalf("RefundByKey = %+v, %v", r, err)
	}
	for _, key := range []string{"act_never", "act_failed"} {
		if _, err := p.RefundByKey(ctx, key); mandate.ErrorCode(err) != mandate.ENOTFOUND {
			t.Fatalf("RefundByKey(%s): err = %v, want not_found", key, err)
		}
	}
}

// TestRefundByKeyOnOrder: knowing the order, reconciliation lists its
// PaymentIntent's refunds, with no time bound, so a refund older than the
// key-only search's window is still found (a review showed it read as "not
// done" after 7 days: money moved, recorded failed, limits given back). A
// miss there is the answer, with no account-wide scan; only an order with
// no payment reference now falls back to the account's recent refunds.
func TestRefundByKeyOnOrder(t *testing.T) {
	old := time.Now().Add(-30 * 24 * time.Hour).Unix()
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		data := []json.RawMessage{json.RawMessage(refundJSON("act_other", 100, "succeeded"))}
		switch {
		case r.URL.Path == "/v1/refunds" && q.Get("payment_intent") == "pi_test_1" && q.Get("created[gte]") == "":
			mu.Lock()
			asked = append(asked, "payment_intent")
			mu.Unlock()
			data = append(data, json.RawMessage(strings.Replace(refundJSON("act_old", 4200, "succeeded"), `"created":1700000000`, fmt.Sprintf(`"created":%d`, old), 1)))
		case r.URL.Path == "/v1/refunds" && q.Get("payment_intent") == "" && q.Get("created[gte]") != "":
			mu.Lock()
			asked = append(asked, "recent")
			mu.Unlock()
			data = append(data, json.RawMessage(refundJSON("act_moved", 700, "succeeded"))) // on another PaymentIntent now
		default:
			t.Errorf("reconciliation asked %s %s", r.Method, r.URL)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "has_more": false, "url": "/v1/refunds", "data": data})
	}))
	defer srv.Close()
	p := stripe.New(stripe.Config{SecretKey: "sk_test_x", APIURL: srv.URL}, shop(t))
	ctx := context.Background()
	for _, c := range []struct {
		key, order, want, found string
		asked                   []string
	}{
		{"act_old", "ord_1", "", "re_act_old", []string{"payment_intent"}},
		// A miss on the PaymentIntent is the answer: no account-wide scan.
		{"act_moved", "ord_1", mandate.ENOTFOUND, "", []string{"payment_intent"}},
		{"act_never", "ord_1", mandate.ENOTFOUND, "", []string{"payment_intent"}},
		// ord_2 has no payment reference now.
		{"act_never", "ord_2", mandate.ENOTFOUND, "", []string{"recent"}},
		// An order that cannot be read: not known, never not_found.
		{"act_x", "ord_gone", mandate.EUNAVAILABLE, "", nil},
	} {
		asked = nil
		r, err := p.RefundByKeyOnOrder(ctx, c.key, c.order)
		if mandate.ErrorCode(err) != c.want || r.ID != c.found {
			t.Errorf("RefundByKeyOnOrder(%s, %s) = %+v, %v; want %q, code %q", c.key, c.order, r, err, c.found, c.want)
		}
		if !slices.Equal(asked, c.asked) {
			t.Errorf("RefundByKeyOnOrder(%s, %s) listed %v, want %v", c.key, c.order, asked, c.asked)
		}
	}
}

// TestRedirectIsNoAnswer: a redirect whose body looks like an answer (an
// empty list of refunds) is not read as one: the lookup is unknown, never
// "no refund was made".
func TestRedirectIsNoAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "http://elsewhere.invalid/v1/refunds")
		w.WriteHeader(http.StatusFound)
		io.WriteString(w, `{"object":"list","has_more":false,"url":"/v1/refunds","data":[]}`)
	}))
	defer srv.Close()
	p := stripe.New(stripe.Config{SecretKey: "sk_test_x", APIURL: srv.URL, Retries: -1, Timeout: time.Second}, shop(t))
	if _, err := p.RefundByKey(context.Background(), "act_1"); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("RefundByKey answered by a redirect: err = %v, want unavailable", err)
	}
}

// TestNoRedirectFollowed: an API URL that answers with a redirect (a proxy,
// a mistyped --api-url) gets no second request elsewhere carrying the
// secret key and the refund; the refund is left unknown, not done.
func TestNoRedirectFollowed(t *testing.T) {
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { leaked.Add(1) }))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, piJSON)
			return
		}
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	p := stripe.New(stripe.Config{SecretKey: "sk_test_x", APIURL: srv.URL, Retries: -1, Timeout: time.Second}, shop(t))
	_, err := p.Refund(context.Background(), backend.RefundRequest{OrderID: "ord_1", Amount: mandate.Money{Minor: 3000, Currency: "USD"}, IdempotencyKey: "act_1"})
	if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("%d requests followed the redirect", n)
	}
}

// TestISKAmounts: Stripe's API keeps ISK two-decimal (100 is 1 króna),
// where Mandate counts whole krónur (ISO 4217). A payment of 10,000 kr is
// read as 10000 ISK, and a refund of 5000 ISK is sent as 500000; an amount
// that is not whole krónur is refused rather than rounded.
func TestISKAmounts(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Import(context.Background(), []byte(`{
  "customers": [{"id": "cus_1", "name": "Ada", "email": "ada@example.com", "created_at": "2024-01-01T00:00:00Z"}],
  "orders": [{"id": "ord_1", "customer_id": "cus_1", "status": "delivered", "currency": "ISK", "total": "10000", "payment_ref": "pi_isk", "created_at": "2026-01-01T00:00:00Z"}]}`)); err != nil {
		t.Fatal(err)
	}
	received := int64(1000000) // 10,000 kr in Stripe's units
	var posted []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			fmt.Fprintf(w, `{"id":"pi_isk","object":"payment_intent","amount":%d,"amount_received":%d,"currency":"isk","status":"succeeded","latest_charge":{"id":"ch_1","object":"charge","amount":%[1]d,"amount_refunded":20000,"currency":"isk"}}`, received, received)
			return
		}
		r.ParseForm()
		posted = append(posted, r.PostForm.Get("amount"))
		fmt.Fprintf(w, `{"id":"re_1","object":"refund","amount":%s,"currency":"isk","status":"succeeded","created":1700000000,"payment_intent":"pi_isk","metadata":{"mandate_action_id":"act_1","mandate_order_id":"ord_1"}}`, r.PostForm.Get("amount"))
	}))
	defer srv.Close()
	p := stripe.New(stripe.Config{SecretKey: "sk_test_x", APIURL: srv.URL, Retries: -1}, st)
	ctx := context.Background()
	o, err := st.Order(ctx, "ord_1")
	if err != nil {
		t.Fatal(err)
	}
	f, err := p.Facts(ctx, o)
	if err != nil || f.Total != (mandate.Money{Minor: 10000, Currency: "ISK"}) || f.Refunded != (mandate.Money{Minor: 200, Currency: "ISK"}) {
		t.Fatalf("Facts = total %v %s, refunded %v, %v; want 10000 ISK and 200 ISK", f.Total, f.Total.Currency, f.Refunded, err)
	}
	r, err := p.Refund(ctx, backend.RefundRequest{OrderID: "ord_1", Amount: mandate.Money{Minor: 5000, Currency: "ISK"}, IdempotencyKey: "act_1"})
	if err != nil || r.Amount != (mandate.Money{Minor: 5000, Currency: "ISK"}) {
		t.Fatalf("Refund = %+v, %v; want 5000 ISK", r, err)
	}
	if len(posted) != 1 || posted[0] != "500000" {
		t.Fatalf("Stripe was sent amount %v, want 500000 (5000 kr)", posted)
	}
	received = 1000050 // 10,000.50 kr: not whole krónur
	if _, err := p.Facts(ctx, o); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("Facts of a payment of 1000050 Stripe ISK units: err = %v, want unavailable", err)
	}
}
