package tools_test

// The window the write-behind outcome opens (storage/behind.go): an agent's
// refund is answered before its outcome record is committed. These tests
// hold that window open on purpose, by taking SQLite's write lock from
// another connection while the backend acts, so the outcome waits in the
// writer's queue for as long as the test likes. Whatever reads the action
// in that window must not act twice: a retry with the same idempotency_key
// in this process answers from the action once its outcome is in (this
// process reads its own writes), one in another process sees it executing,
// and a recovery pass racing the outcome leaves exactly one outcome.

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// dbWriteLock holds SQLite's write lock on a database file from a
// connection of its own, as another process's long transaction would.
type dbWriteLock struct {
	db   *sql.DB
	conn *sql.Conn
}

func lockDBFile(t *testing.T, path string) *dbWriteLock {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		db.Close()
		t.Fatalf("take the write lock: %v", err)
	}
	return &dbWriteLock{db: db, conn: conn}
}

// status reads an action's status inside the locked transaction: what is
// committed while the lock is held.
func (l *dbWriteLock) status(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := l.conn.QueryRowContext(context.Background(), `SELECT status FROM actions WHERE id = ?`, id).Scan(&s); err != nil {
		t.Fatalf("read action %s under the lock: %v", id, err)
	}
	return s
}

func (l *dbWriteLock) release() {
	l.conn.ExecContext(context.Background(), "ROLLBACK")
	l.conn.Close()
	l.db.Close()
}

// keyedPayments answers RefundByKey from the refunds the fake backend
// made, as a real system of record does, so recovery can find them.
type keyedPayments struct{ *fakeBackend }

func (k keyedPayments) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	k.record("RefundByKey", "")
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range k.refunds {
		if r.IdempotencyKey == key {
			return backend.Refund{ID: "re_" + key, OrderID: r.OrderID, Amount: r.Amount, Reason: r.Reason, IdempotencyKey: key, CreatedAt: now}, nil
		}
	}
	return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "no refund with key %q", key)
}

// peerOf is a second server on h's database file and backend, as another
// process sharing the database is: its own storage.DB, so its own writer
// and none of h's queued write-behinds.
func peerOf(t *testing.T, h *harness) *harness {
	t.Helper()
	db, err := storage.Open(context.Background(), h.path)
	if err != nil {
		t.Fatalf("open the database a second time: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	// As serve does: a read's audit record (a retry's answer too) goes to
	// the lookup journal, so it is not held up by h's write lock.
	if err := db.OpenLookupJournal(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := &harness{t: t, db: db, path: h.path, be: h.be, tools: map[string]server.ServerTool{}}
	p.deps = &tools.Deps{
		Policy:  h.deps.Policy,
		DB:      db,
		Backend: backend.Backend{Payments: keyedPayments{h.be}, Orders: h.be, Customers: h.be},
		// The clock of the records (storage's own), so that recovery's
		// grace is measured against the actions' real times.
		Now: time.Now,
	}
	for _, st := range tools.ServerTools(p.deps) {
		p.tools[st.Tool.Name] = st
	}
	return p
}

func TestRetryBeforeWriteBehindOutcome(t *testing.T) {
	t.Parallel()
	agent := tools.WithAgent(context.Background(), "demo-agent")
	args := map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched", "idempotency_key": "refund-wb-1"}

	for _, tt := range []struct {
		name string
		// during runs while the outcome is held back, and returns what
		// must be finished once it is let through.
		during func(t *testing.T, h, peer *harness, id string) func()
	}{
		{"retry in this process waits for its own outcome", func(t *testing.T, h, peer *harness, id string) func() {
			var (
				got  *mcp.CallToolResult
				gerr error
			)
			done := make(chan struct{})
			go func() { // no t.Fatal off the test's goroutine: checked in finish
				defer close(done)
				got, gerr = h.tools["refund_order"].Handler(agent, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order", Arguments: args}})
			}()
			return func() {
				<-done
				if gerr != nil || got == nil {
					t.Fatalf("retry in the same process: %v, %v", got, gerr)
				}
				res := decode(t, got)
				if res.ActionID != id || res.Status != storage.StatusExecuted || !strings.Contains(res.Message, "Already done") {
					t.Fatalf("retry in the same process answered %+v; want action %s executed, from its record", res, id)
				}
			}
		}},
		{"retry in another process sees it executing", func(t *testing.T, h, peer *harness, id string) func() {
			res := decode(t, peer.call(agent, "refund_order", args))
			if res.ActionID != id || res.Status != storage.StatusExecuting {
				t.Fatalf("retry in another process while the outcome is uncommitted answered %+v; want action %s executing", res, id)
			}
			return func() {
				h.db.Settle(context.Background())
				res := decode(t, peer.call(agent, "refund_order", args))
				if res.ActionID != id || res.Status != storage.StatusExecuted {
					t.Fatalf("retry in another process after the outcome committed answered %+v; want action %s executed", res, id)
				}
			}
		}},
		{"recovery in another process races the outcome", func(t *testing.T, h, peer *harness, id string) func() {
			// A grace of 0 takes the action as abandoned at once: what a
			// peer does when this process's writer is held up longer than
			// --recover-after.
			var rep tools.RecoverReport
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				rep, err = tools.Recover(context.Background(), peer.deps, 0)
			}()
			return func() {
				<-done
				if err != nil {
					t.Fatalf("recover: %v", err)
				}
				asked := slices.Contains(h.be.Calls(), "RefundByKey")
				t.Logf("recovery asked the backend: %v; report %+v", asked, rep)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			be := &fakeBackend{}
			h := newHarness(t, shippedPolicy(t), be)
			peer := peerOf(t, h) // opened before the lock: opening may write
			var (
				lock     *dbWriteLock
				lockOnce sync.Once
			)
			// The attempt is durable before the backend is called; taking
			// the lock here holds back only the outcome.
			be.OnRefund = func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
				lockOnce.Do(func() { lock = lockDBFile(t, h.path) })
				return backend.Refund{ID: "re_" + req.IdempotencyKey, OrderID: req.OrderID, Amount: req.Amount, Reason: req.Reason,
					IdempotencyKey: req.IdempotencyKey, CreatedAt: now}, nil
			}
			first := decode(t, h.call(agent, "refund_order", args))
			if first.Status != storage.StatusExecuted || first.Decision != policy.Allow || lock == nil {
				t.Fatalf("first refund answered %+v (lock taken: %v); want executed", first, lock != nil)
			}
			locked := true
			defer func() {
				if locked {
					lock.release()
				}
			}()
			// The agent has its answer and the outcome is not committed:
			// the window.
			if s := lock.status(t, first.ActionID); s != storage.StatusExecuting {
				t.Fatalf("with the outcome held back the action is %s, want executing", s)
			}
			finish := tt.during(t, h, peer, first.ActionID)
			// Give whatever during started time to reach its read or write
			// (not needed for correctness: anything after the lock is
			// released is checked the same way).
			time.Sleep(50 * time.Millisecond)
			lock.release()
			locked = false
			finish()

			h.db.Settle(context.Background())
			if w := be.Writes(); !slices.Equal(w, []string{"Refund"}) {
				t.Fatalf("backend writes %v, want exactly one Refund", w)
			}
			act, err := peer.db.Action(context.Background(), first.ActionID)
			if err != nil {
				t.Fatal(err)
			}
			if act.Status != storage.StatusExecuted {
				t.Fatalf("action %s ended %s, want executed", act.ID, act.Status)
			}
			var phases []string
			for _, r := range readRecords(t, peer.db, storage.Filter{}) {
				if r.Tool == "refund_order" {
					if r.ActionID != first.ActionID {
						t.Fatalf("audit record %d belongs to another refund action %s: the retry acted", r.Seq, r.ActionID)
					}
					phases = append(phases, r.Phase+":"+r.Outcome)
					if r.Phase == storage.PhaseOutcome && strings.Contains(r.Error, "reconciled") {
						t.Logf("the outcome was recorded by recovery, not by the call")
					}
				}
			}
			if !slices.Equal(phases, []string{"attempt:", "outcome:executed"}) {
				t.Fatalf("audit of the refund: %v, want one attempt and one executed outcome", phases)
			}
			if _, err := peer.db.Verify(context.Background()); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}
