package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/backend/httpapi"
)

// TestConformance: the checks pass against the reference server and each
// deliberately broken variant fails exactly the check that covers it.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token string // the server's; the checks always send "s3cret"
		wrap  func(http.Handler) http.Handler
		fails []string
	}{
		{"reference", "s3cret", nil, nil},
		{"no authentication", "", nil, []string{"auth-required", "auth-wrong-token"}},
		{"plain-text 404", "s3cret", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/customers/mandate-conformance-") {
					http.NotFound(w, r)
					return
				}
				next.ServeHTTP(w, r)
			})
		}, []string{"customer-not-found"}},
		{"ignores the idempotency key", "s3cret", func(next http.Handler) http.Handler {
			n := 0
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refunds") && r.Header.Get("Idempotency-Key") != "" {
					n++
					r.Header.Set("Idempotency-Key", r.Header.Get("Idempotency-Key")+strings.Repeat("x", n))
				}
				next.ServeHTTP(w, r)
			})
		}, []string{"refund-idempotent", "refund-key-conflict", "refund-late-repeat", "operation-refund"}},
		// A service older than Mandate-Not-After makes a late change: it
		// does not conform, since it could make a change after Mandate's
		// recovery recorded it not done.
		{"ignores the deadline", "s3cret", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Header.Del(httpapi.HeaderNotAfter)
				next.ServeHTTP(w, r)
			})
		}, []string{"refund-deadline"}},
		{"money as JSON numbers", "s3cret", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && r.URL.Path == "/orders/ord_1004" {
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"id":"ord_1004","customer_id":"cus_ada","status":"pending","currency":"USD","total":45.0,"refunded":0,"created_at":"2026-01-01T00:00:00Z"}`))
					return
				}
				next.ServeHTTP(w, r)
			})
		}, []string{"order-shape"}},
		// Preconditions are optional: a service that does not say it checks
		// them conforms (the check is skipped), one that says so but
		// ignores "expected" does not.
		{"no preconditions", "s3cret", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPatch && r.Header.Get("Content-Type") == "application/json" && strings.Contains(readBody(r), `"expected"`) {
					t.Errorf("a PATCH with a precondition was sent to a service that does not say it checks it")
				}
				next.ServeHTTP(hideHeader{w}, r)
			})
		}, nil},
		{"says it checks preconditions but ignores them", "s3cret", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPatch {
					var m map[string]string
					json.Unmarshal([]byte(readBody(r)), &m)
					delete(m, "expected")
					b, _ := json.Marshal(m)
					r.Body = io.NopCloser(bytes.NewReader(b))
					r.ContentLength = int64(len(b))
				}
				next.ServeHTTP(w, r)
			})
		}, []string{"update-precondition"}},
		// The order with a refund is optional: a service without it
		// conforms, one that reports a wrong one does not.
		{"refund without its order", "s3cret", rewriteRefund(func(r map[string]any) { delete(r, "order") }), nil},
		{"refund with a stale order", "s3cret", rewriteRefund(func(r map[string]any) {
			if o, ok := r["order"].(map[string]any); ok {
				o["refunded"] = "0.00"
			}
		}), []string{"refund-order"}},
		{"refund with another order", "s3cret", rewriteRefund(func(r map[string]any) {
			if o, ok := r["order"].(map[string]any); ok {
				o["id"] = "ord_1001"
			}
		}), []string{"refund-order"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wrap []func(http.Handler) http.Handler
			if tc.wrap != nil {
				wrap = append(wrap, tc.wrap)
			}
			_, _, hs := serve(t, tc.token, wrap...)
			conf := &httpapi.Conformance{BaseURL: hs.URL, Token: "s3cret", OrderID: "ord_1004", Writes: true}
			var failed []string
			ran := map[string]bool{}
			for _, r := range conf.Run(context.Background()) {
				ran[r.Name] = r.Skipped == ""
				if r.Err != nil {
					failed = append(failed, r.Name)
				}
			}
			for _, name := range []string{"auth-required", "order-not-found", "change-needs-key", "order-shape"} {
				if !ran[name] {
					t.Errorf("check %s did not run", name)
				}
			}
			switch _, seen := ran["update-precondition"]; {
			case tc.name == "reference" && !ran["update-precondition"]:
				t.Errorf("check update-precondition did not run against the reference server")
			case tc.name == "no preconditions" && (!seen || ran["update-precondition"]):
				t.Errorf("check update-precondition was not skipped for a service that does not say it checks them")
			}
			switch _, seen := ran["refund-order"]; {
			case tc.name == "reference" && !ran["refund-order"]:
				t.Errorf("check refund-order did not run against the reference server, which reports the order")
			case tc.name == "refund without its order" && (!seen || ran["refund-order"]):
				t.Errorf("check refund-order was not skipped for a service that does not report the order")
			}
			if strings.Join(failed, " ") != strings.Join(tc.fails, " ") {
				t.Fatalf("failed checks %v, want %v", failed, tc.fails)
			}
		})
	}
}

// rewriteRefund passes every answer to POST /orders/{id}/refunds through
// edit, as a service that reports a refund's order differently would.
func rewriteRefund(edit func(map[string]any)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/refunds") {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			var m map[string]any
			if rec.Code/100 == 2 && json.Unmarshal(body, &m) == nil {
				edit(m)
				body, _ = json.Marshal(m)
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
}

// readBody reads r's body and puts it back.
func readBody(r *http.Request) string {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return string(b)
}

// hideHeader drops Mandate-Preconditions from an answer, as a service
// that does not check preconditions answers.
type hideHeader struct{ http.ResponseWriter }

func (h hideHeader) WriteHeader(status int) {
	h.Header().Del(httpapi.HeaderPreconditions)
	h.ResponseWriter.WriteHeader(status)
}

func (h hideHeader) Write(b []byte) (int, error) {
	h.Header().Del(httpapi.HeaderPreconditions)
	return h.ResponseWriter.Write(b)
}
