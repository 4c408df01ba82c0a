package tools_test

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// slowShop is the reference server (`mandate store serve`) on 127.0.0.1
// over a real store file, behind the HTTP contract's client, with a switch
// that holds the store's write lock as another writer would: a change then
// waits for the lock, beyond the backend timeout, and the server carries it
// out after Mandate has given up waiting.
type slowShop struct {
	*liveEnv
	path  string
	posts atomic.Int64 // refund requests that reached the server
}

func newSlowShop(t *testing.T, timeout time.Duration) *slowShop {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := &slowShop{path: filepath.Join(dir, "store.db")}
	st, _, err := store.OpenSeeded(ctx, s.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := (&httpapi.Server{Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}).Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refunds") {
			s.posts.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	c := &httpapi.Client{BaseURL: hs.URL, Retries: 1, Name: "the shop"}
	s.liveEnv = &liveEnv{db: db, st: st}
	s.d = &tools.Deps{Agent: "demo-agent", DB: db, Logger: slog.New(slog.DiscardHandler), BackendTimeout: timeout,
		Backend: backend.Backend{Payments: c, Orders: c, Customers: c}, ModelFile: "model.conf", PolicyFile: "/srv/policy.csv"}
	s.d.Policy = policy.NewEngine(s.load(t, string(mandate.DefaultPolicy), true))
	return s
}

// lock holds the store's write lock from another connection until the
// returned func is called.
func (s *slowShop) lock(t *testing.T) (release func()) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", s.path)
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
		if !done {
			done = true
			if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
				t.Error(err)
			}
			conn.Close()
			db.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// refunded is what the store has refunded on order id.
func (s *slowShop) refunded(t *testing.T, id string) int64 {
	t.Helper()
	o, err := s.st.Order(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return o.Refunded.Minor
}

// idle waits until the reference server is no longer carrying out a
// change with key (its lookup stops answering 409 in progress), and
// returns what the lookup says then.
func (s *slowShop) idle(t *testing.T, key string) error {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := s.d.Backend.Payments.RefundByKey(context.Background(), key)
		if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
			return err
		} else if time.Now().After(deadline) {
			t.Fatalf("the server is still carrying out the change with key %s: %v", key, err)
		}
	}
}

// TestTimeoutIsNotFailure: the system of record is slower than the backend
// timeout: the refund waits for its write lock after Mandate stopped
// waiting. Mandate must not conclude from a lookup that nothing happened
// while the refund may still be made: the action would be failed, its
// limits given back and the agent invited to try again, and a new key
// could move the money twice. The action stays executing with its limits
// counted, the agent is told not to retry, a retry with the same key moves
// nothing, and recovery waits while the server is still carrying the
// refund out. The refund reaches its transaction after its deadline
// (Mandate-Not-After), so the store refuses it there; recovery believes
// the lookup's "not done" only once the action's deadline and the clock
// skew margin are past (not at a grace of 0 alone), then records it
// failed, and the store made no refund. A person's approval runs through
// the same execute and is covered too.
func TestTimeoutIsNotFailure(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ctx := context.Background()

	t.Run("agent's refund", func(t *testing.T) {
		s := newSlowShop(t, timeout)
		refund := handler(t, s.d, "refund_order")
		call := func() *tools.ActionResult {
			t.Helper()
			res, err := refund(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
				Arguments: map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "late", "idempotency_key": "k-1"}}})
			if err != nil {
				t.Fatal(err)
			}
			got, ok := res.StructuredContent.(*tools.ActionResult)
			if !ok {
				t.Fatalf("no action result: %+v", res)
			}
			return got
		}
		before := s.refunded(t, "ord_1001")
		release := s.lock(t)

		got := call()
		if got.Decision != policy.Allow {
			t.Fatalf("decision %s (%s), want allow", got.Decision, got.Message)
		}
		if got.Status != storage.StatusExecuting || !strings.Contains(got.Message, "Do not retry") {
			t.Fatalf("agent told status %s: %q; want executing and not to retry (the store is still making the refund)", got.Status, got.Message)
		}
		act, err := s.db.Action(ctx, got.ActionID)
		if err != nil {
			t.Fatal(err)
		}
		if act.Status != storage.StatusExecuting {
			t.Fatalf("action %s, want executing", act.Status)
		}
		if u, err := s.db.Usage(ctx, act); err != nil || u.AgentRefunds24h != 1 {
			t.Fatalf("usage %+v, %v; want the refund still counted against the limits", u, err)
		}
		if n := s.posts.Load(); n != 2 {
			t.Fatalf("%d refund requests reached the server, want the call and one repeat with the same key", n)
		}

		// A retry with the same key is answered from the record.
		if again := call(); again.ActionID != got.ActionID || again.Status != storage.StatusExecuting {
			t.Fatalf("retry with the same key: %+v, want action %s still executing", again, got.ActionID)
		}
		if n := s.posts.Load(); n != 2 {
			t.Fatalf("the retry reached the server (%d requests)", n)
		}

		// Recovery while the server is still carrying it out: not known yet.
		if rep, err := tools.Recover(ctx, s.d, 0); err != nil || rep != (tools.RecoverReport{Unknown: 1}) {
			t.Fatalf("recover while in progress = %+v, %v; want it left unknown", rep, err)
		}
		if act, err := s.db.Action(ctx, got.ActionID); err != nil || act.Status != storage.StatusExecuting {
			t.Fatalf("after recovery while in progress: %+v, %v; want executing", act, err)
		}

		release()
		if err := s.idle(t, got.ActionID); mandate.ErrorCode(err) != mandate.ENOTFOUND {
			t.Fatalf("lookup once the held refund is over: %v; want not_found (refused past its deadline)", err)
		}
		// Not done, but recovery asks too early: before the deadline the
		// action's requests carried (execute's budget, twice the timeout,
		// from when it was recorded executing), then within the skew
		// margin after it. Both leave it executing, whatever the grace.
		d := *s.d
		d.Now = func() time.Time { return act.UpdatedAt.Add(timeout) }
		if rep, err := tools.Recover(ctx, &d, 0); err != nil || rep != (tools.RecoverReport{Unknown: 1}) {
			t.Fatalf("recover before the deadline = %+v, %v; want it left unknown", rep, err)
		}
		d.Now, d.ClockSkew = time.Now, time.Hour
		if rep, err := tools.Recover(ctx, &d, 0); err != nil || rep != (tools.RecoverReport{Unknown: 1}) {
			t.Fatalf("recover within the clock-skew margin = %+v, %v; want it left unknown", rep, err)
		}
		if act, err := s.db.Action(ctx, got.ActionID); err != nil || act.Status != storage.StatusExecuting {
			t.Fatalf("after recovery before the deadline: %+v, %v; want executing", act, err)
		}
		d.ClockSkew = 50 * time.Millisecond
		time.Sleep(time.Until(act.UpdatedAt.Add(2*timeout + d.ClockSkew)))
		if rep, err := tools.Recover(ctx, &d, 0); err != nil || rep != (tools.RecoverReport{NotExecuted: 1}) {
			t.Fatalf("recover past the deadline = %+v, %v; want it recorded not done", rep, err)
		}
		act, err = s.db.Action(ctx, got.ActionID)
		if err != nil || act.Status != storage.StatusFailed {
			t.Fatalf("after recovery: %+v, %v; want failed", act, err)
		}
		if again := call(); again.ActionID != got.ActionID || again.Status != storage.StatusFailed {
			t.Fatalf("retry with the same key after recovery: %+v, want action %s failed", again, got.ActionID)
		}
		if d := s.refunded(t, "ord_1001") - before; d != 0 {
			t.Fatalf("the store refunded %d more on ord_1001, want none: the refund came after its deadline", d)
		}
	})

	t.Run("approved refund", func(t *testing.T) {
		s := newSlowShop(t, timeout)
		before := s.refunded(t, "ord_1002")
		res, err := handler(t, s.d, "refund_order")(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
			Arguments: map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}}})
		if err != nil {
			t.Fatal(err)
		}
		asked := res.StructuredContent.(*tools.ActionResult)
		if asked.Status != storage.StatusPending {
			t.Fatalf("refund of 150.00 is %s, want pending a person's approval", asked.Status)
		}
		id := asked.ActionID
		release := s.lock(t)
		if _, err := tools.Approve(ctx, s.d, id, "alice", "goodwill"); err != nil {
			t.Fatalf("approve: %v", err)
		}
		act, err := s.db.Action(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if act.Status != storage.StatusExecuting {
			t.Fatalf("approved refund while the store is slow is %s (%s); want executing, not failed", act.Status, act.Error)
		}
		release()
		if err := s.idle(t, id); mandate.ErrorCode(err) != mandate.ENOTFOUND {
			t.Fatalf("lookup once the held refund is over: %v; want not_found (refused past its deadline)", err)
		}
		time.Sleep(time.Until(act.UpdatedAt.Add(2 * timeout)))
		if rep, err := tools.Recover(ctx, s.d, 0); err != nil || rep.NotExecuted != 1 {
			t.Fatalf("recover = %+v, %v; want the approved refund recorded not done", rep, err)
		}
		if d := s.refunded(t, "ord_1002") - before; d != 0 {
			t.Fatalf("the store refunded %d more on ord_1002, want none: the refund came after its deadline", d)
		}
	})
}
