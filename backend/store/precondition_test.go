package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// TestUpdateCustomerExpected: a change with a precondition applies only
// while the field holds the expected value, and a refusal changes nothing.
func TestUpdateCustomerExpected(t *testing.T) {
	ctx := context.Background()
	s := demoStore(t)
	before := snapshot(t, s)
	_, err := s.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName,
		Value: "Ada King", Expected: "Someone Else", IdempotencyKey: "k1"})
	wantError(t, err, mandate.ECONFLICT, "no longer the expected value")
	if !errors.Is(err, backend.ErrChangedSince) {
		t.Fatalf("error %v does not carry backend.ErrChangedSince", err)
	}
	if after := snapshot(t, s); after != before {
		t.Fatalf("a refused precondition changed the database:\n%s\nwant\n%s", after, before)
	}

	// The same key is free (nothing was recorded), and holds now.
	req := backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName,
		Value: "Ada King", Expected: "Ada Lovelace", IdempotencyKey: "k1"}
	first, err := s.UpdateCustomer(ctx, req)
	if err != nil || first.Name != "Ada King" {
		t.Fatalf("UpdateCustomer with a precondition that holds = %+v, %v", first, err)
	}
	// A repeat by key answers the first result although the precondition
	// no longer holds: it is the same change, not a second one.
	if again, err := s.UpdateCustomer(ctx, req); err != nil || again != first {
		t.Fatalf("repeat = %+v, %v; want %+v", again, err, first)
	}
	// The same key with another precondition is another request.
	other := req
	other.Expected = "Ada King"
	_, err = s.UpdateCustomer(ctx, other)
	wantError(t, err, mandate.ECONFLICT, `idempotency key "k1" was already used`)
}

// TestUpdateCustomerExpectedInsideTransaction: a customer's change that
// commits after the caller read the account and after its call started,
// but before its transaction could begin, is seen by the precondition and
// is not overwritten. Another handle on the file (as another process)
// holds the write transaction, with the change made but not committed,
// while the call starts; only once the call is waiting does it commit.
func TestUpdateCustomerExpectedInsideTransaction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Import(ctx, DemoData); err != nil {
		t.Fatal(err)
	}
	other, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	read, err := s.Customer(ctx, "cus_grace") // what a revert read before sending
	if err != nil {
		t.Fatal(err)
	}
	tx, end, err := other.beginWrite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, updateCustomerQuery(backend.FieldPhone), "+1 202 555 0199", "cus_grace"); err != nil {
		end()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_grace", Field: backend.FieldPhone,
			Value: "+1 202 555 0000", Expected: read.Phone, IdempotencyKey: "revert:act_1:1"})
		done <- err
	}()
	select {
	case err := <-done:
		end()
		t.Fatalf("UpdateCustomer returned %v while another writer held the file; it must wait for it", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		end()
		t.Fatal(err)
	}
	end()
	err = <-done
	wantError(t, err, mandate.ECONFLICT, "no longer the expected value")
	c, err := s.Customer(ctx, "cus_grace")
	if err != nil || c.Phone != "+1 202 555 0199" {
		t.Fatalf("phone = %q, %v; want the customer's own change kept", c.Phone, err)
	}
	if n := queryInt(t, s, `SELECT COUNT(*) FROM operations WHERE idempotency_key = ?`, "revert:act_1:1"); n != 0 {
		t.Fatalf("a refused change recorded its key %d times", n)
	}
}
