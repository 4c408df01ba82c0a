package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
)

// TestBackendCheckConformance: `mandate backend check --conformance
// --writes` passes against `mandate store serve` (which refuses a change
// past its deadline), and fails, naming the
// check, against a server that skips authentication.
func TestBackendCheckConformance(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc := startStoreServe(t, filepath.Join(dir, "shop.db"), writeToken(t, dir, "tok"), "127.0.0.1:0")
	env := []string{"ORDERS_TOKEN=tok"}
	good := httpBackendFile(t, t.TempDir(), "http://"+svc.addr)
	out, errOut, err := runMandate(t, env, "backend", "check", "--backend", good, "--order", "ord_1004", "--conformance", "--writes")
	if err != nil || !strings.Contains(out, "ok    refund-idempotent") || !strings.Contains(out, "ok    cancel-idempotent") ||
		!strings.Contains(out, "ok    refund-deadline") || !strings.Contains(out, "all checks passed") {
		t.Fatalf("against store serve: %v\n%s%s", err, out, errOut)
	}

	// A broken service: the same server, but it ignores the token.
	st, _, err := store.OpenSeeded(context.Background(), filepath.Join(dir, "broken.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	broken := httptest.NewServer((&httpapi.Server{Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}).Handler())
	defer broken.Close()
	bad := httpBackendFile(t, t.TempDir(), broken.URL)
	out, _, err = runMandate(t, env, "backend", "check", "--backend", bad, "--conformance")
	if err == nil || !strings.Contains(out, "FAIL  auth-required") || !strings.Contains(out, "FAIL  auth-wrong-token") {
		t.Fatalf("against a server without authentication: err = %v, want exit 1 naming auth-required\n%s", err, out)
	}
	if strings.Contains(out, "FAIL  order-not-found") {
		t.Fatalf("a check that should pass failed:\n%s", out)
	}
}
