package httpapi_test

import (
	"context"
	"database/sql"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
)

// lockStore holds the SQLite write lock on the store file at path from
// another connection, as another writer would, until the returned func is
// called: the reference server's changes wait for it, its reads do not.
func lockStore(t *testing.T, path string) (release func()) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if done {
			return
		}
		done = true
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			t.Error(err)
		}
		conn.Close()
		db.Close()
	}
	t.Cleanup(release)
	return release
}

// TestOperationInProgress: a refund the client gave up waiting for is still
// being carried out by the reference server (waiting for the write lock).
// Until it is over, GET /operations/{key} must not say 404 (nothing was
// done): it answers 409, which the client reports as unavailable (not
// known yet). It reaches its transaction after its deadline, so it is
// refused there and the lookup then says not_found; the same request sent
// again in time is made once, and once more returns it without a second
// refund. The timeout error names the deadline that ended the call, not
// the client's default.
func TestOperationInProgress(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	st, _, err := store.OpenSeeded(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hs := httptest.NewServer((&httpapi.Server{Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}).Handler())
	t.Cleanup(hs.Close)
	c := &httpapi.Client{BaseURL: hs.URL, Retries: 1, Name: "the test service"}
	before, err := st.Order(ctx, "ord_1001")
	if err != nil {
		t.Fatal(err)
	}
	amount := mandate.Money{Minor: 3000, Currency: "USD"}
	req := backend.RefundRequest{OrderID: "ord_1001", Amount: amount, Reason: "late", IdempotencyKey: "act_slow"}

	release := lockStore(t, path)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Refund(cctx, req)
	cancel()
	if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("refund while the store is locked: err = %v, want unavailable", err)
	}
	msg := mandate.ErrorMessage(err)
	_, limit, _ := strings.Cut(msg, "did not answer within ")
	if d, perr := time.ParseDuration(limit); perr != nil || d <= 0 || d > 300*time.Millisecond {
		t.Fatalf("timeout message %q, want it to name the 300ms deadline that ended the call, not the client's default", msg)
	}

	// The server is still carrying out the refund: not found would be a lie.
	_, err = c.RefundByKey(ctx, "act_slow")
	if mandate.ErrorCode(err) != mandate.EUNAVAILABLE || !strings.Contains(mandate.ErrorMessage(err), "still carrying out") {
		t.Fatalf("lookup while the refund is in progress: err = %v, want unavailable (in progress), not not_found", err)
	}
	// A key nobody used is still not found.
	if _, err := c.RefundByKey(ctx, "act_never"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("lookup of an unused key: err = %v, want not_found", err)
	}

	// The held refund reaches its transaction only after its deadline
	// (the client's 300ms): the store refuses it there, so once it is no
	// longer in progress, the lookup rightly says nothing was done.
	release()
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err = c.RefundByKey(ctx, "act_slow")
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			break
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("lookup after the held refund's deadline: %v; want not_found (refused in its transaction, made late never)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The same request sent again in time is made, once.
	found, err := c.Refund(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Refund(ctx, req); err != nil || again.ID != found.ID {
		t.Fatalf("the same request again = %+v, %v; want refund %s", again, err, found.ID)
	}
	after, err := st.Order(ctx, "ord_1001")
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Refunded.Minor - before.Refunded.Minor; got != amount.Minor {
		t.Fatalf("order refunded %d more, want exactly one refund of %d", got, amount.Minor)
	}
}
