package httpapi_test

import (
	"context"
	"net/http"
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
		}, []string{"refund-idempotent", "refund-key-conflict", "operation-refund"}},
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
			if strings.Join(failed, " ") != strings.Join(tc.fails, " ") {
				t.Fatalf("failed checks %v, want %v", failed, tc.fails)
			}
		})
	}
}
