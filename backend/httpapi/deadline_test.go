package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
)

// holdProxy forwards every request to target, holding each change (any
// request but a GET) until release is closed. It forwards a held request
// even after its client has gone, as a buffering proxy would, and reports
// what the service answered to it on answered.
type holdProxy struct {
	target   string
	arrived  chan *http.Request
	release  chan struct{}
	answered chan heldAnswer
}

type heldAnswer struct {
	status int
	body   []byte
}

func newHoldProxy(t *testing.T, target string) (*holdProxy, string) {
	p := &holdProxy{target: target, arrived: make(chan *http.Request, 4), release: make(chan struct{}), answered: make(chan heldAnswer, 4)}
	hs := httptest.NewServer(p)
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		select {
		case <-p.release:
		default:
			close(p.release)
		}
	})
	return p, hs.URL
}

func (p *holdProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	held := r.Method != http.MethodGet
	if held {
		p.arrived <- r
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
		p.answered <- heldAnswer{resp.StatusCode, b}
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// TestLateRefundRefused: a refund held up on its way (here by a proxy)
// until after the deadline its client sent reaches the reference server,
// which refuses it with a 409 deadline_passed problem and makes no refund,
// so a lookup by its key afterwards rightly says nothing was done.
func TestLateRefundRefused(t *testing.T) {
	ctx := context.Background()
	direct, st, hs := serve(t, "")
	proxy, proxyURL := newHoldProxy(t, hs.URL)
	c := &httpapi.Client{BaseURL: proxyURL, Name: "the test service"}
	before, err := st.Order(ctx, "ord_1001")
	if err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	errc := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := c.Refund(cctx, backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 3000, Currency: "USD"},
			Reason: "late", IdempotencyKey: "act_late"})
		errc <- err
	}()
	held := <-proxy.arrived
	notAfter, err := time.Parse(time.RFC3339Nano, held.Header.Get(httpapi.HeaderNotAfter))
	if err != nil || notAfter.Before(sent) || notAfter.After(sent.Add(400*time.Millisecond)) {
		t.Fatalf("%s = %q (%v); want the client's deadline, within 300ms of sending", httpapi.HeaderNotAfter, held.Header.Get(httpapi.HeaderNotAfter), err)
	}
	if err := <-errc; mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("client: %v, want unavailable (no answer in time)", err)
	}
	time.Sleep(time.Until(notAfter) + 50*time.Millisecond)
	close(proxy.release)

	ans := <-proxy.answered
	var p httpapi.Problem
	if err := json.Unmarshal(ans.body, &p); err != nil || ans.status != http.StatusConflict || p.Code != httpapi.CodeDeadlinePassed {
		t.Fatalf("the late refund was answered %d %s; want 409 with code %s", ans.status, ans.body, httpapi.CodeDeadlinePassed)
	}
	after, err := st.Order(ctx, "ord_1001")
	if err != nil {
		t.Fatal(err)
	}
	if after.Refunded != before.Refunded {
		t.Fatalf("order refunded %s after a late refund, was %s: it must not be made", after.Refunded, before.Refunded)
	}
	if _, err := direct.RefundByKey(ctx, "act_late"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("lookup of the late refund's key: %v, want not_found", err)
	}
}

// TestDeadlineRefusals: every change past its deadline is refused with
// 409 deadline_passed and changes nothing, and the client reports it as a
// conflict carrying backend.ErrDeadlinePassed; a repeat of a change that
// was made gets the change back however late; a malformed deadline is an
// invalid request.
func TestDeadlineRefusals(t *testing.T) {
	ctx := context.Background()
	c, st, hs := serve(t, "")
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	send := func(method, path, key, notAfter, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(httpapi.HeaderIdempotencyKey, key)
		if notAfter != "" {
			req.Header.Set(httpapi.HeaderNotAfter, notAfter)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	done, err := c.Refund(ctx, backend.RefundRequest{OrderID: "ord_1002", Amount: mandate.Money{Minor: 500, Currency: "USD"}, Reason: "r", IdempotencyKey: "act_done"})
	if err != nil {
		t.Fatal(err)
	}
	status, b := send("POST", "/orders/ord_1002/refunds", "act_done", past, `{"amount":"5.00","currency":"USD","reason":"r"}`)
	var again httpapi.Refund
	if err := json.Unmarshal(b, &again); err != nil || status/100 != 2 || again.ID != done.ID {
		t.Fatalf("a late repeat of a refund that was made: %d %s; want it back (%s)", status, b, done.ID)
	}

	before, _ := st.Order(ctx, "ord_1004")
	cust, _ := st.Customer(ctx, "cus_grace")
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/orders/ord_1004/refunds", `{"amount":"1.00","currency":"USD","reason":"r"}`},
		{"POST", "/orders/ord_1004/cancel", `{"reason":"r"}`},
		{"PATCH", "/customers/cus_grace", `{"phone":"+1 202 555 0100"}`},
	} {
		key := "act_late_" + strings.ReplaceAll(tc.path, "/", "_")
		status, b := send(tc.method, tc.path, key, past, tc.body)
		var p httpapi.Problem
		if err := json.Unmarshal(b, &p); err != nil || status != http.StatusConflict || p.Code != httpapi.CodeDeadlinePassed {
			t.Errorf("%s %s past its deadline: %d %s; want 409 %s", tc.method, tc.path, status, b, httpapi.CodeDeadlinePassed)
		}
		if status, _ := send("GET", "/operations/"+key, "", "", ""); status != http.StatusNotFound {
			t.Errorf("GET /operations for the refused %s %s: %d, want 404", tc.method, tc.path, status)
		}
		status, b = send(tc.method, tc.path, key+"_bad", "tomorrow", tc.body)
		if err := json.Unmarshal(b, &p); err != nil || status != http.StatusUnprocessableEntity || p.Code != mandate.EINVALID {
			t.Errorf("%s %s with a malformed deadline: %d %s; want 422 invalid", tc.method, tc.path, status, b)
		}
	}
	if after, _ := st.Order(ctx, "ord_1004"); after != before {
		t.Errorf("order after refused changes: %+v, was %+v", after, before)
	}
	if after, _ := st.Customer(ctx, "cus_grace"); after != cust {
		t.Errorf("customer after a refused change: %+v, was %+v", after, cust)
	}

	// The client reads the refusal as a conflict: nothing was done.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"type":"x","title":"Conflict","status":409,"detail":"late","code":"deadline_passed"}`))
	}))
	defer srv.Close()
	_, err = (&httpapi.Client{BaseURL: srv.URL}).Refund(ctx, backend.RefundRequest{OrderID: "ord_1004",
		Amount: mandate.Money{Minor: 100, Currency: "USD"}, IdempotencyKey: "act_x"})
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !errors.Is(err, backend.ErrDeadlinePassed) {
		t.Fatalf("client on a deadline_passed problem: %v; want a conflict carrying ErrDeadlinePassed", err)
	}
}
