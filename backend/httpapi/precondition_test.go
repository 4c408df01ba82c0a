package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
)

// TestExpectedOverTheWire: a change's precondition crosses the contract,
// the reference server has the store check it, and a precondition that no
// longer holds comes back as a conflict the client knows for one.
func TestExpectedOverTheWire(t *testing.T) {
	ctx := context.Background()
	c, st, _ := serve(t, "tok")
	_, err := c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName,
		Value: "Ada King", Expected: "Not Her Name", IdempotencyKey: "k1"})
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !errors.Is(err, backend.ErrChangedSince) {
		t.Fatalf("UpdateCustomer with a stale precondition = %v (code %q); want a conflict carrying ErrChangedSince", err, mandate.ErrorCode(err))
	}
	if cu, _ := st.Customer(ctx, "cus_ada"); cu.Name != "Ada Lovelace" {
		t.Fatalf("name = %q after a refused precondition, want it unchanged", cu.Name)
	}
	cu, err := c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName,
		Value: "Ada King", Expected: "Ada Lovelace", IdempotencyKey: "k1"})
	if err != nil || cu.Name != "Ada King" {
		t.Fatalf("UpdateCustomer with a precondition that holds = %+v, %v", cu, err)
	}
	// Another conflict (an email in use) is not taken for "changed since".
	_, err = c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldEmail,
		Value: "grace@example.com", Expected: "ada@example.com", IdempotencyKey: "k2"})
	if mandate.ErrorCode(err) != mandate.ECONFLICT || errors.Is(err, backend.ErrChangedSince) {
		t.Fatalf("email in use with a precondition that holds = %v; want a plain conflict", err)
	}
}

// TestExpectedIgnoredNotSent: a service of the contract that does not say
// it checks the precondition (it would set the field and ignore the rest)
// is sent no change with one: the client refuses it, unsent, with a
// conflict, which records the action as failed rather than unknown.
func TestExpectedIgnoredNotSent(t *testing.T) {
	ctx := context.Background()
	var patches atomic.Int32
	name := "Ada Lovelace"
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cu := httpapi.Customer{ID: "cus_ada", Name: name, Email: "ada@example.com"}
		switch r.Method + " " + r.URL.Path {
		case "GET /customers/cus_ada":
		case "PATCH /customers/cus_ada":
			patches.Add(1)
			var in map[string]string
			json.NewDecoder(r.Body).Decode(&in)
			name = in["name"] // sets the field, ignores the rest
			cu.Name = name
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(cu)
	}))
	defer hs.Close()
	c := &httpapi.Client{BaseURL: hs.URL, Name: "the lax service"}

	_, err := c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName,
		Value: "Ada King", Expected: "Ada Lovelace", IdempotencyKey: "k1"})
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(mandate.ErrorMessage(err), httpapi.HeaderPreconditions) {
		t.Fatalf("UpdateCustomer with a precondition to a service that does not check it = %v; want a conflict naming %s", err, httpapi.HeaderPreconditions)
	}
	if n := patches.Load(); n != 0 || name != "Ada Lovelace" {
		t.Fatalf("%d PATCHes were sent (name now %q); want none", n, name)
	}
	// Without a precondition the same service is used as before.
	if cu, err := c.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName,
		Value: "Ada King", IdempotencyKey: "k2"}); err != nil || cu.Name != "Ada King" || patches.Load() != 1 {
		t.Fatalf("UpdateCustomer without a precondition = %+v, %v (%d PATCHes); want it sent once", cu, err, patches.Load())
	}
}
