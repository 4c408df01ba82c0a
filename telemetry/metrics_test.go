package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/storage"
)

// fakePayments is a Payments that also checks refunds beforehand.
type fakePayments struct{ err error }

func (f fakePayments) Refund(context.Context, backend.RefundRequest) (backend.Refund, error) {
	return backend.Refund{ID: "re_1"}, f.err
}
func (f fakePayments) RefundByKey(context.Context, string) (backend.Refund, error) {
	return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "no refund")
}
func (f fakePayments) CheckRefundable(backend.Order) error { return errors.New("checked") }

// TestMetricsText: what the hooks are told shows in the exposition, the
// backend wrapper keeps RefundChecker, and scrape-time state is read.
func TestMetricsText(t *testing.T) {
	m := New(State{
		Pending:       func(context.Context) (int, error) { return 3, nil },
		PolicyVersion: func() string { return "v1" },
		LivePolicy:    func(context.Context) (string, error) { return "v2", nil },
	})
	m.Decision("refund_order", "allow")
	m.Decision("refund_order", "allow")
	m.ToolCall("refund_order", 20*time.Millisecond)
	m.Commit(storage.CommitStats{Writes: 7, Durable: true, Duration: time.Millisecond})
	m.Commit(storage.CommitStats{Writes: 1, Err: errors.New("disk")})
	m.AuthFailure("no bearer credentials")
	m.HTTPRefused("origin")
	m.PolicyReloadFailed(errors.New("broken"))

	be := m.Backend(backend.Backend{Payments: fakePayments{err: mandate.Errorf(mandate.EUNAVAILABLE, "down")}})
	if _, ok := be.Payments.(backend.RefundChecker); !ok {
		t.Fatalf("the wrapped Payments lost its RefundChecker")
	}
	_, _ = be.Payments.Refund(context.Background(), backend.RefundRequest{})
	_, _ = be.Payments.RefundByKey(context.Background(), "k")

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`mandate_decisions_total{effect="allow",tool="refund_order"} 2`,
		`mandate_tool_call_duration_seconds_count{tool="refund_order"} 1`,
		`mandate_audit_commit_batch_size_sum 7`,
		`mandate_audit_commit_duration_seconds_count{durable="true"} 1`,
		`mandate_audit_commit_failures_total 1`,
		`mandate_auth_failures_total{reason="no bearer credentials"} 1`,
		`mandate_http_refused_total{reason="origin"} 1`,
		`mandate_policy_reload_failures_total 1`,
		`mandate_backend_call_duration_seconds_count{operation="payments.refund"} 1`,
		`mandate_backend_errors_total{code="unavailable",operation="payments.refund"} 1`,
		`mandate_backend_errors_total{code="not_found",operation="payments.refund_by_key"} 1`,
		`mandate_pending_approvals 3`,
		`mandate_policy_info{version="v1"} 1`,
		`mandate_policy_live 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

// TestBackendKeepsRefundReporter: with metrics on, the embedded store still
// reports the order a refund left (so the guard takes before and after from
// the refund's answer, not from two more reads), and a payment system that
// does not, still does not.
func TestBackendKeepsRefundReporter(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := New(State{})
	for _, tc := range []struct {
		name string
		p    backend.Payments
		want bool
	}{
		{"embedded store", st, true},
		{"a system that does not report", fakePayments{}, false},
	} {
		rr, ok := m.Backend(backend.Backend{Payments: tc.p}).Payments.(backend.RefundReporter)
		if got := ok && rr.ReportsRefundOrder(); got != tc.want {
			t.Errorf("%s wrapped for metrics: reports the refund's order %v, want %v", tc.name, got, tc.want)
		}
	}
}

// findingPayments also searches an order's refunds (backend.RefundFinder).
type findingPayments struct{ fakePayments }

func (findingPayments) RefundByKeyOnOrder(_ context.Context, key, orderID string) (backend.Refund, error) {
	return backend.Refund{ID: "re_" + key, OrderID: orderID}, nil
}

// TestBackendKeepsRefundFinder: with metrics on (every serve --http),
// reconciliation still searches the order's refunds where the payment
// system can (a review found the wrapper hid it, so a Stripe refund older
// than the key-only window read as not done), and falls back to the key
// alone where it cannot, as without the wrapper.
func TestBackendKeepsRefundFinder(t *testing.T) {
	m := New(State{})
	f, ok := m.Backend(backend.Backend{Payments: findingPayments{}}).Payments.(backend.RefundFinder)
	if !ok {
		t.Fatal("the wrapped payments are no RefundFinder")
	}
	if r, err := f.RefundByKeyOnOrder(context.Background(), "act_1", "ord_1"); err != nil || r.ID != "re_act_1" || r.OrderID != "ord_1" {
		t.Fatalf("RefundByKeyOnOrder through the wrapper = %+v, %v", r, err)
	}
	f, ok = m.Backend(backend.Backend{Payments: fakePayments{}}).Payments.(backend.RefundFinder)
	if !ok {
		t.Fatal("the wrapped payments are no RefundFinder")
	}
	if _, err := f.RefundByKeyOnOrder(context.Background(), "act_1", "ord_1"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("a system without the search: err = %v, want RefundByKey's not_found", err)
	}
}
