package main

// A remediation over the HTTP contract, against `mandate store serve` in
// another process, when the customer changes the field between the
// revert's read and its write, and when the service does not say it checks
// the precondition.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestStoreServePrecondition: the reference server says it checks
// "expected", answers a stale one with 409 changed_since and changes
// nothing, and applies one that holds.
func TestStoreServePrecondition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storePath := filepath.Join(dir, "store.db")
	svc := startStoreServe(t, storePath, writeToken(t, dir, "s3cret-token"), "127.0.0.1:0")
	do := func(method, path, key, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+svc.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cret-token")
		if key != "" {
			req.Header.Set(httpapi.HeaderIdempotencyKey, key)
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, _ := do("GET", "/customers/cus_ada", "", "")
	if resp.StatusCode != 200 || resp.Header.Get(httpapi.HeaderPreconditions) != "expected" {
		t.Fatalf("GET /customers/cus_ada: %d, %s: %q; want 200 and %q", resp.StatusCode, httpapi.HeaderPreconditions, resp.Header.Get(httpapi.HeaderPreconditions), "expected")
	}
	resp, body := do("PATCH", "/customers/cus_ada", "k1", `{"name": "Ada King", "expected": "Not Her Name"}`)
	var p httpapi.Problem
	json.Unmarshal([]byte(body), &p)
	if resp.StatusCode != 409 || p.Code != "conflict" || p.Type != httpapi.ProblemChangedSince {
		t.Fatalf("PATCH with a stale expected: %d %s; want 409 conflict of type %s", resp.StatusCode, body, httpapi.ProblemChangedSince)
	}
	if got := customerName(t, storePath, "cus_ada"); got != "Ada Lovelace" {
		t.Fatalf("name = %q after a refused PATCH", got)
	}
	resp, body = do("PATCH", "/customers/cus_ada", "k1", `{"name": "Ada King", "expected": "Ada Lovelace"}`)
	if resp.StatusCode != 200 || customerName(t, storePath, "cus_ada") != "Ada King" {
		t.Fatalf("PATCH with an expected that holds: %d %s", resp.StatusCode, body)
	}
}

func customerName(t *testing.T, storePath, id string) string {
	t.Helper()
	st, err := store.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.Customer(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Name
}

// TestRemediateOverHTTPNeverOverwrites: mandate remediate --apply with the
// customers behind `mandate store serve`, through a proxy on 127.0.0.1.
// First the customer changes the name just before the revert's PATCH
// reaches the service: the revert is refused there, the customer's name
// stays, and remediate lists it as skipped. Then the proxy hides the
// service's Mandate-Preconditions header, as a service that would ignore
// "expected" does: the revert fails without being sent.
func TestRemediateOverHTTPNeverOverwrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	svc := startStoreServe(t, storePath, writeToken(t, dir, "s3cret-token"), "127.0.0.1:0")
	direct := &httpapi.Client{BaseURL: "http://" + svc.addr, Token: "s3cret-token"}

	var mode atomic.Int32 // 1: the customer changes it first; 2: hide the header
	var sentExpected atomic.Int32
	target, _ := url.Parse("http://" + svc.addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if mode.Load() == 2 {
			resp.Header.Del(httpapi.HeaderPreconditions)
		}
		return nil
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			var in map[string]string
			json.Unmarshal(b, &in)
			if _, ok := in[httpapi.PatchExpected]; ok {
				sentExpected.Add(1)
				if mode.Load() == 1 {
					if _, err := direct.UpdateCustomer(r.Context(), backend.UpdateRequest{CustomerID: strings.TrimPrefix(r.URL.Path, "/customers/"),
						Field: "name", Value: "Ada King", IdempotencyKey: "the-customer"}); err != nil {
						t.Errorf("the customer's own change: %v", err)
					}
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	backendFile := httpBackendFile(t, dir, proxy.URL)
	token := "ORDERS_TOKEN=s3cret-token"

	agent := startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AGENT=demo-agent", token}, "--db", dbPath, "--backend", backendFile)
	addUsers(t, dbPath, "alice")
	for _, id := range []string{"cus_ada", "cus_grace"} {
		var r actionResult
		decode(t, call(t, agent, "update_account", map[string]any{"customer_id": id, "field": "name", "value": "Mallory", "reason": "customer asked"}), &r)
		if r.Status != storage.StatusExecuted {
			t.Fatalf("the agent's change on %s: %+v", id, r)
		}
	}
	remediate := func(customer string) (results []tools.RevertResult, failed bool) {
		t.Helper()
		out, errOut, err := runMandate(t, []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword, token}, "remediate", "--agent", "demo-agent", "--since", "1h",
			"--customer", customer, "--apply", "--as", "alice", "--format", "json", "--db", dbPath, "--backend", backendFile)
		var v struct{ Results []tools.RevertResult }
		if jerr := json.Unmarshal([]byte(out), &v); jerr != nil {
			t.Fatalf("remediate: %v, %v\n%s%s", err, jerr, out, errOut)
		}
		return v.Results, err != nil
	}

	mode.Store(1)
	res, failed := remediate("cus_ada")
	if failed || len(res) != 1 || res[0].Status != "skipped" || res[0].Why != "the customer changed it since" {
		t.Fatalf("remediate with the customer's change landing first: %+v (failed %v); want skipped, changed since", res, failed)
	}
	if got := customerName(t, storePath, "cus_ada"); got != "Ada King" {
		t.Fatalf("cus_ada's name = %q: the revert overwrote the customer's change", got)
	}
	if n := sentExpected.Load(); n != 1 {
		t.Fatalf("%d PATCHes with a precondition, want 1", n)
	}
	act := openDB(t, dbPath)
	if a, err := act.Action(t.Context(), res[0].RevertID); err != nil || a.Status != storage.StatusFailed || !strings.HasPrefix(a.Error, tools.RevertChangedSince) {
		t.Fatalf("the revert's action: %+v, %v", a, err)
	}

	mode.Store(2)
	res, failed = remediate("cus_grace")
	if !failed || len(res) != 1 || res[0].Status != "failed" || !strings.Contains(res[0].Message, httpapi.HeaderPreconditions) {
		t.Fatalf("remediate against a service that does not say it checks the precondition: %+v (failed %v); want failed, naming %s", res, failed, httpapi.HeaderPreconditions)
	}
	if n := sentExpected.Load(); n != 1 {
		t.Fatalf("%d PATCHes with a precondition, want still 1: none may reach a service that does not check it", n)
	}
	if got := customerName(t, storePath, "cus_grace"); got != "Mallory" {
		t.Fatalf("cus_grace's name = %q, want the agent's, untouched", got)
	}

	// Once the service says it checks it, the next run reverts (the claim
	// was given back) exactly once.
	mode.Store(0)
	if res, failed = remediate("cus_grace"); failed || len(res) != 1 || res[0].Status != "reverted" {
		t.Fatalf("remediate again: %+v (failed %v); want reverted", res, failed)
	}
	if got := customerName(t, storePath, "cus_grace"); got != "Grace Hopper" {
		t.Fatalf("cus_grace's name = %q after the revert", got)
	}
	if res, _ = remediate("cus_grace"); len(res) != 0 {
		t.Fatalf("a third run: %+v; want nothing left to revert", res)
	}
	if got := revertActions(t, dbPath); len(got) != 1 {
		t.Fatalf("executed reverts %v, want exactly one", got)
	}
}
