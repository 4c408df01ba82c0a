package tools_test

// Concurrency and failing backends, in process against real SQLite files.
// Parallel refunds come from two agents through two gateway handles and two
// store handles on the same files, as two `mandate serve` processes would
// make them; afterwards the store, the audit trail and the limit counters
// must tell the same story. A backend that hangs or fails without a code is
// sent the same request again with the same key; what that does not settle
// is left executing for recovery, and the agent is told not to retry.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// concOrder is one order to import, with its own old customer account.
type concOrder struct {
	id, customer, total string
}

// concShop is the import file for orders, each customer's account years old
// so that only the amount and limit rules apply.
func concShop(t testing.TB, orders []concOrder) []byte {
	t.Helper()
	type rec = map[string]string
	var f struct {
		Customers []rec `json:"customers"`
		Orders    []rec `json:"orders"`
	}
	seen := map[string]bool{}
	for _, o := range orders {
		if !seen[o.customer] {
			seen[o.customer] = true
			f.Customers = append(f.Customers, rec{"id": o.customer, "name": "Customer " + o.customer,
				"email": o.customer + "@example.com", "created_at": "2020-01-01T00:00:00Z"})
		}
		f.Orders = append(f.Orders, rec{"id": o.id, "customer_id": o.customer, "status": "delivered",
			"currency": "USD", "total": o.total, "created_at": "2026-01-01T00:00:00Z"})
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// concShipped loads the shipped model.conf and policy.csv.
func concShipped(t testing.TB) *policy.Policy {
	t.Helper()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// concEnv is a gateway database and a store in one directory, with one pair
// of handles per agent.
type concEnv struct {
	dbPath, storePath string
	agents            []string
	deps              []*tools.Deps
}

// newConcEnv imports orders and opens, for each agent, its own storage.DB
// and store.Store on the shared files, like one `mandate serve` per agent.
func newConcEnv(t *testing.T, orders []concOrder, agents ...string) *concEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	e := &concEnv{dbPath: filepath.Join(dir, "mandate.db"), storePath: filepath.Join(dir, "store.db"), agents: agents}
	engine := policy.NewEngine(concShipped(t))
	for i, agent := range agents {
		db, err := storage.Open(ctx, e.dbPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		st, err := store.Open(e.storePath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if i == 0 {
			if _, err := st.Import(ctx, concShop(t, orders)); err != nil {
				t.Fatalf("import: %v", err)
			}
		}
		recordLive(t, db, engine.Policy())
		e.deps = append(e.deps, &tools.Deps{Agent: agent, Policy: engine, DB: db,
			Backend: backend.Backend{Payments: st, Orders: st, Customers: st}, Logger: slog.New(slog.DiscardHandler)})
	}
	return e
}

// concTool returns the guarded handler of tool as registered for d.
func concTool(t testing.TB, d *tools.Deps, tool string) server.ToolHandlerFunc {
	t.Helper()
	for _, st := range tools.ServerTools(d) {
		if st.Tool.Name == tool {
			return st.Handler
		}
	}
	t.Fatalf("no tool %s registered", tool)
	return nil
}

// concRefund is one refund_order call and what the agent was told.
type concRefund struct {
	agent, order, amount string
	res                  *tools.ActionResult
}

// concRefundArgs are the audited arguments of a refund.
type concRefundArgs struct {
	OrderID string `json:"order_id"`
	Amount  string `json:"amount"`
}

// concRefundResult is the result recorded for an executed refund.
type concRefundResult struct {
	RefundID string `json:"refund_id"`
	OrderID  string `json:"order_id"`
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
}

func usdMinor(t testing.TB, s string) int64 {
	t.Helper()
	m, err := mandate.ParseMoney(s, "USD")
	if err != nil {
		t.Fatalf("amount %q: %v", s, err)
	}
	return m.Minor
}

// concLedger is what the three records agree on once every call returned.
type concLedger struct {
	decisions map[string]int   // by decision
	statuses  map[string]int   // by action status
	executed  map[string]int64 // minor units refunded per order, from the audit
}

// checkConcLedger reads the audit trail, the store and the limit counters
// straight from the files and fails unless they agree one to one: every
// allowed attempt has exactly one outcome, every executed outcome is
// exactly one refund in the store and every refund in the store is an
// executed outcome, no order is refunded beyond its total, and the counters
// hold exactly the executed refunds. calls are checked against the actions
// they made.
func checkConcLedger(t *testing.T, e *concEnv, calls []concRefund) concLedger {
	t.Helper()
	ctx := context.Background()
	for _, d := range e.deps {
		d.DB.Settle(ctx) // each "process" commits its queued outcomes
	}
	db := e.deps[0].DB
	l := concLedger{decisions: map[string]int{}, statuses: map[string]int{}, executed: map[string]int64{}}

	// The audit: one attempt per action, then at most one outcome.
	type history struct {
		attempt  *storage.Record
		outcomes []string
	}
	actions := map[string]*history{}
	var order []string
	if err := db.Records(ctx, storage.Filter{Tool: "refund_order"}, func(r *storage.Record) error {
		h := actions[r.ActionID]
		switch r.Phase {
		case storage.PhaseAttempt:
			if h != nil {
				return fmt.Errorf("action %s has two attempt records", r.ActionID)
			}
			rec := *r
			actions[r.ActionID] = &history{attempt: &rec}
			order = append(order, r.ActionID)
		case storage.PhaseOutcome:
			if h == nil {
				return fmt.Errorf("audit record %d: outcome of %s before any attempt", r.Seq, r.ActionID)
			}
			h.outcomes = append(h.outcomes, r.Outcome)
		}
		return nil
	}); err != nil {
		t.Fatalf("read audit: %v", err)
	}
	if len(actions) != len(calls) {
		t.Fatalf("audit has %d refund attempts for %d calls", len(actions), len(calls))
	}

	// The store: every refund, by the idempotency key it was made with.
	sdb, err := sql.Open("sqlite", "file:"+e.storePath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	type refund struct {
		id, order string
		minor     int64
	}
	refunds := map[string]refund{}
	rows, err := sdb.QueryContext(ctx, `SELECT idempotency_key, id, order_id, amount FROM refunds`)
	if err != nil {
		t.Fatal(err)
	}
	perOrder := map[string]int64{}
	for rows.Next() {
		var key string
		var r refund
		if err := rows.Scan(&key, &r.id, &r.order, &r.minor); err != nil {
			t.Fatal(err)
		}
		refunds[key] = r
		perOrder[r.order] += r.minor
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	customerOf := map[string]string{}
	rows, err = sdb.QueryContext(ctx, `SELECT id, customer_id, total, refunded FROM orders`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, customer string
		var total, refunded int64
		if err := rows.Scan(&id, &customer, &total, &refunded); err != nil {
			t.Fatal(err)
		}
		customerOf[id] = customer
		if refunded > total {
			t.Errorf("order %s: refunded %d of %d minor units: more than was paid", id, refunded, total)
		}
		if refunded != perOrder[id] {
			t.Errorf("order %s: refunded says %d minor units, its refunds sum to %d", id, refunded, perOrder[id])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	// Each action against its record, the store and what the agent heard.
	type usage struct{ minor, count int64 }
	wantCounters := map[string]usage{}
	byID := map[string]concRefund{}
	executed := map[string]bool{}
	for _, c := range calls {
		if c.res == nil {
			t.Fatalf("refund of %s on %s by %s got no action result", c.amount, c.order, c.agent)
		}
		byID[c.res.ActionID] = c
	}
	for _, id := range order {
		h := actions[id]
		c, ok := byID[id]
		if !ok {
			t.Fatalf("audit has action %s that no call returned", id)
		}
		act, err := db.Action(ctx, id)
		if err != nil {
			t.Fatalf("action %s: %v", id, err)
		}
		l.decisions[h.attempt.Decision]++
		l.statuses[act.Status]++
		if h.attempt.Agent != c.agent {
			t.Fatalf("action %s: audited agent %q, made by %q", id, h.attempt.Agent, c.agent)
		}
		if c.res.Status != act.Status || c.res.Decision != h.attempt.Decision {
			t.Fatalf("action %s: agent was told %s/%s, recorded %s/%s", id, c.res.Decision, c.res.Status, h.attempt.Decision, act.Status)
		}
		wantOutcomes := 0
		if h.attempt.Decision == policy.Allow {
			wantOutcomes = 1
		}
		if len(h.outcomes) != wantOutcomes {
			t.Fatalf("action %s (%s, status %s): %d outcome records %v, want %d", id, h.attempt.Decision, act.Status, len(h.outcomes), h.outcomes, wantOutcomes)
		}
		if wantOutcomes == 1 && h.outcomes[0] != act.Status {
			t.Fatalf("action %s: outcome record says %q, action says %q", id, h.outcomes[0], act.Status)
		}
		r, inStore := refunds[id]
		if act.Status != storage.StatusExecuted {
			if inStore {
				t.Fatalf("action %s is %s but the store has its refund %s", id, act.Status, r.id)
			}
			continue
		}
		if !inStore {
			t.Fatalf("action %s is executed but the store has no refund with its key", id)
		}
		var args concRefundArgs
		var got concRefundResult
		if err := json.Unmarshal(h.attempt.Args, &args); err != nil {
			t.Fatalf("action %s args %s: %v", id, h.attempt.Args, err)
		}
		if err := json.Unmarshal(act.Result, &got); err != nil {
			t.Fatalf("action %s result %s: %v", id, act.Result, err)
		}
		minor := usdMinor(t, got.Amount)
		if got.RefundID != r.id || got.OrderID != r.order || minor != r.minor || args.OrderID != r.order || usdMinor(t, args.Amount) != r.minor {
			t.Fatalf("action %s: asked %+v, recorded result %+v, store has %+v", id, args, got, r)
		}
		l.executed[r.order] += minor
		executed[id] = true
		for _, scope := range []string{"agent_refunded\x00" + c.agent + "\x00USD", "agent_refunds\x00" + c.agent, "customer_refunds\x00" + customerOf[r.order]} {
			u := wantCounters[scope]
			wantCounters[scope] = usage{u.minor + minor, u.count + 1}
		}
	}
	for key, r := range refunds {
		if !executed[key] {
			t.Fatalf("store has refund %s (key %q) that no executed outcome accounts for", r.id, key)
		}
	}
	for o, minor := range perOrder {
		if l.executed[o] != minor {
			t.Fatalf("order %s: store refunded %d, executed outcomes %d", o, minor, l.executed[o])
		}
	}
	if len(refunds) != l.statuses[storage.StatusExecuted] {
		t.Fatalf("store has %d refunds, audit %d executed refunds", len(refunds), l.statuses[storage.StatusExecuted])
	}

	// The limit counters hold exactly the executed refunds, per scope.
	gdb, err := sql.Open("sqlite", "file:"+e.dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer gdb.Close()
	// Each row is a running total (storage/limits.go): a scope's newest is
	// its whole count.
	rows, err = gdb.QueryContext(ctx, `SELECT scope, amount_minor, count FROM usage_totals u
		WHERE minute = (SELECT MAX(minute) FROM usage_totals WHERE scope = u.scope)`)
	if err != nil {
		t.Fatal(err)
	}
	gotCounters := map[string]usage{}
	for rows.Next() {
		var scope string
		var u usage
		if err := rows.Scan(&scope, &u.minor, &u.count); err != nil {
			t.Fatal(err)
		}
		if u != (usage{}) {
			gotCounters[scope] = u
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	for scope, want := range wantCounters {
		if got := gotCounters[scope]; got != want {
			t.Errorf("usage counter %q = %+v, want %+v from the executed refunds", scope, gotCounters[scope], want)
		}
		delete(gotCounters, scope)
	}
	for scope, got := range gotCounters {
		t.Errorf("usage counter %q = %+v, but no executed refund accounts for it", scope, got)
	}
	return l
}

// TestParallelRefunds sends 100 refunds at once from demo-agent and
// senior-bot, each through its own handles on the shared files, and checks
// that no order is refunded beyond what was paid and that the store, the
// audit outcomes and the limit counters agree exactly. The shipped policy
// sends a customer's fourth refund within 30 days to a person, so one
// customer gets at most three refunds while any are executing or executed.
func TestParallelRefunds(t *testing.T) {
	one := func(total string) []concOrder { return []concOrder{{"ord_c01", "cus_c01", total}} }
	var many []concOrder
	for i := range 25 {
		many = append(many, concOrder{fmt.Sprintf("ord_m%02d", i), fmt.Sprintf("cus_m%02d", i), "40.00"})
	}
	for _, tt := range []struct {
		name   string
		orders []concOrder
		order  func(i int) string
		amount func(i int) string
		check  func(t *testing.T, l concLedger, calls []concRefund)
	}{
		{
			// Three refunds of at most 30.00 fit in 120.00, so the three
			// the count limit lets through all succeed; the rest wait.
			name: "one order of 120.00", orders: one("120.00"),
			order:  func(int) string { return "ord_c01" },
			amount: func(i int) string { return fmt.Sprintf("%d.00", 1+i%30) },
			check: func(t *testing.T, l concLedger, _ []concRefund) {
				if l.decisions[policy.Allow] != 3 || l.decisions[policy.RequireApproval] != 97 || len(l.decisions) != 2 {
					t.Fatalf("decisions = %v, want 3 allow (the customer's limit) and 97 require_approval", l.decisions)
				}
				if l.statuses[storage.StatusExecuted] != 3 || l.statuses[storage.StatusPending] != 97 {
					t.Fatalf("statuses = %v, want 3 executed and 97 pending", l.statuses)
				}
			},
		},
		{
			// Any two refunds of 25.00 to 30.00 exceed 40.00: the first to
			// reach the store is made, and every other allowed one is
			// refused by the store and recorded as failed.
			name: "one order of 40.00, any two refunds exceed it", orders: one("40.00"),
			order:  func(int) string { return "ord_c01" },
			amount: func(i int) string { return fmt.Sprintf("%d.00", 25+i%6) },
			check: func(t *testing.T, l concLedger, calls []concRefund) {
				if l.statuses[storage.StatusExecuted] != 1 {
					t.Fatalf("statuses = %v, want exactly 1 executed", l.statuses)
				}
				if l.statuses[storage.StatusFailed] != l.decisions[policy.Allow]-1 {
					t.Fatalf("statuses = %v, decisions = %v: every allowed refund but one must have failed", l.statuses, l.decisions)
				}
				for _, c := range calls {
					if c.res.Status == storage.StatusExecuted && l.executed["ord_c01"] != usdMinor(t, c.amount) {
						t.Fatalf("refunded %d minor units, the executed refund was %s", l.executed["ord_c01"], c.amount)
					}
				}
			},
		},
		{
			// Four refunds on each of 25 orders of 40.00: each customer
			// stays within three refunds, and the store must refuse what
			// the stale facts let through.
			name: "25 orders of 40.00, four refunds each", orders: many,
			order:  func(i int) string { return many[i%len(many)].id },
			amount: func(i int) string { return fmt.Sprintf("%d.00", 1+(i*7)%30) },
			check: func(t *testing.T, l concLedger, calls []concRefund) {
				perOrder := map[string]int{} // one order per customer
				for _, c := range calls {
					if c.res.Status == storage.StatusExecuted {
						perOrder[c.order]++
					}
				}
				for o, n := range perOrder {
					if n > 3 {
						t.Fatalf("order %s got %d refunds; the policy allows a customer 3 in 30 days", o, n)
					}
				}
				if l.statuses[storage.StatusExecuted] == 0 {
					t.Fatalf("statuses = %v: no refund was made at all", l.statuses)
				}
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			agents := []string{"demo-agent", "senior-bot"}
			e := newConcEnv(t, tt.orders, agents...)
			refund := make([]server.ToolHandlerFunc, len(e.deps))
			for i, d := range e.deps {
				refund[i] = concTool(t, d, "refund_order")
			}
			calls := make([]concRefund, 100)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range calls {
				calls[i] = concRefund{agent: agents[i%len(agents)], order: tt.order(i), amount: tt.amount(i)}
				wg.Add(1)
				go func(c *concRefund, h server.ToolHandlerFunc) {
					defer wg.Done()
					<-start
					res, err := h(context.Background(), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
						Arguments: map[string]any{"order_id": c.order, "amount": c.amount, "reason": "concurrency test"}}})
					if err != nil {
						t.Errorf("refund %s on %s: Go error %v", c.amount, c.order, err)
						return
					}
					c.res, _ = res.StructuredContent.(*tools.ActionResult)
					if c.res == nil {
						t.Errorf("refund %s on %s: no action result: %s", c.amount, c.order, text(res))
					}
				}(&calls[i], refund[i%len(refund)])
			}
			close(start)
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			l := checkConcLedger(t, e, calls)
			tt.check(t, l, calls)
			t.Logf("decisions %v, statuses %v", l.decisions, l.statuses)
		})
	}
}

// concPayments is a payments system whose answers a test scripts; the
// orders and customers come from a real store.
type concPayments struct {
	refund func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error)
	byKey  func(ctx context.Context, key string) (backend.Refund, error)
}

func (p *concPayments) Refund(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
	return p.refund(ctx, req)
}

func (p *concPayments) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	return p.byKey(ctx, key)
}

// concMade is a payments system's memory of the refunds it made, which
// RefundByKey answers from.
type concMade struct {
	mu      sync.Mutex
	refunds map[string]backend.Refund
	lookups int
	calls   int // free for a test's refund func to count with
}

func (m *concMade) make(req backend.RefundRequest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refunds[req.IdempotencyKey] = backend.Refund{ID: "re_" + req.IdempotencyKey, OrderID: req.OrderID,
		Amount: req.Amount, Reason: req.Reason, IdempotencyKey: req.IdempotencyKey, CreatedAt: time.Now()}
}

func (m *concMade) find(_ context.Context, key string) (backend.Refund, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	if r, ok := m.refunds[key]; ok {
		return r, nil
	}
	return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "no refund with key %q", key)
}

// TestHangingBackend: a refund that hangs past the backend timeout, or fails
// without saying why, is sent again with the same idempotency key (a
// backend honouring it answers with the refund it made, or makes one), and
// then, if time is left, looked up by key. An answer or a refund found is
// executed, told to the agent within twice the timeout. Anything else,
// "not found" included, proves nothing while a request of ours may still be
// on its way: the action is left executing, with no outcome and its limits
// counted, the agent is told not to retry, and Recover settles it later.
func TestHangingBackend(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// The agent must hear back within execute's budget (twice the timeout)
	// plus what two durable writes take on a slow, shared machine.
	const slack = 2 * time.Second
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	for _, tt := range []struct {
		name string
		// refund is the payments system's Refund; m remembers what it made.
		refund func(ctx context.Context, m *concMade, req backend.RefundRequest) (backend.Refund, error)
		// lookupDown makes RefundByKey fail with unavailable.
		lookupDown bool
		wantStatus string // what the agent is told
		settled    string // with wantStatus executing: what Recover records
		hangs      bool
		leak       string // internal error text the agent must not see
	}{
		{name: "hangs past the timeout every time, nothing made", hangs: true, wantStatus: storage.StatusExecuting, settled: storage.StatusFailed, leak: "deadline",
			refund: func(ctx context.Context, _ *concMade, _ backend.RefundRequest) (backend.Refund, error) {
				return backend.Refund{}, hang(ctx)
			}},
		{name: "hangs past the timeout every time after making the refund", hangs: true, wantStatus: storage.StatusExecuting, settled: storage.StatusExecuted,
			refund: func(ctx context.Context, m *concMade, req backend.RefundRequest) (backend.Refund, error) {
				m.make(req) // the answer is lost on the way back
				return backend.Refund{}, hang(ctx)
			}},
		{name: "hangs once after making the refund; the repeat returns it", hangs: true, wantStatus: storage.StatusExecuted,
			refund: func(ctx context.Context, m *concMade, req backend.RefundRequest) (backend.Refund, error) {
				if r, err := m.find(ctx, req.IdempotencyKey); err == nil {
					return r, nil // the key is honoured: the first refund, not a second
				}
				m.make(req)
				return backend.Refund{}, hang(ctx)
			}},
		{name: "hangs once before making it; the repeat makes it", hangs: true, wantStatus: storage.StatusExecuted,
			refund: func(ctx context.Context, m *concMade, req backend.RefundRequest) (backend.Refund, error) {
				m.mu.Lock()
				m.calls++
				first := m.calls == 1
				m.mu.Unlock()
				if first {
					return backend.Refund{}, hang(ctx)
				}
				m.make(req)
				return m.find(ctx, req.IdempotencyKey)
			}},
		{name: "fails without a code, nothing made", wantStatus: storage.StatusExecuting, settled: storage.StatusFailed, leak: "connection reset",
			refund: func(context.Context, *concMade, backend.RefundRequest) (backend.Refund, error) {
				return backend.Refund{}, errors.New("read tcp 10.0.0.1:443: connection reset by peer")
			}},
		{name: "fails without a code after making the refund", wantStatus: storage.StatusExecuted,
			refund: func(_ context.Context, m *concMade, req backend.RefundRequest) (backend.Refund, error) {
				m.make(req)
				return backend.Refund{}, errors.New("unexpected EOF")
			}},
		{name: "hangs, and the lookup cannot say", hangs: true, lookupDown: true, wantStatus: storage.StatusExecuting, settled: storage.StatusExecuted,
			refund: func(ctx context.Context, m *concMade, req backend.RefundRequest) (backend.Refund, error) {
				m.make(req)
				return backend.Refund{}, hang(ctx)
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newConcEnv(t, []concOrder{{"ord_h01", "cus_h01", "100.00"}}, "senior-bot")
			d := e.deps[0]
			d.BackendTimeout = timeout
			made := &concMade{refunds: map[string]backend.Refund{}}
			var down sync.Mutex // held while the lookup is down
			lookupDown := tt.lookupDown
			d.Backend.Payments = &concPayments{
				refund: func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
					return tt.refund(ctx, made, req)
				},
				byKey: func(ctx context.Context, key string) (backend.Refund, error) {
					down.Lock()
					isDown := lookupDown
					down.Unlock()
					if isDown {
						return backend.Refund{}, mandate.Errorf(mandate.EUNAVAILABLE, "payments are down")
					}
					return made.find(ctx, key)
				},
			}
			refund := concTool(t, d, "refund_order")

			began := time.Now()
			res, err := refund(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
				Arguments: map[string]any{"order_id": "ord_h01", "amount": "12.50", "reason": "hanging backend test"}}})
			took := time.Since(began)
			if err != nil {
				t.Fatalf("Go error (a JSON-RPC error to the agent): %v", err)
			}
			if took > 2*timeout+slack {
				t.Fatalf("the agent waited %v; the backend timeout is %v", took, timeout)
			}
			if tt.hangs && took < timeout {
				t.Fatalf("answered after %v, before the %v timeout: the hang was not waited for", took, timeout)
			}
			got, _ := res.StructuredContent.(*tools.ActionResult)
			if got == nil {
				t.Fatalf("no action result: %s", text(res))
			}
			if got.Decision != policy.Allow || got.Status != tt.wantStatus {
				t.Fatalf("decision %s, status %s, want allow and %s; message: %s", got.Decision, got.Status, tt.wantStatus, got.Message)
			}
			if wantErr := tt.wantStatus == storage.StatusFailed; res.IsError != wantErr {
				t.Fatalf("isError = %v, want %v for status %s; message: %s", res.IsError, wantErr, got.Status, got.Message)
			}
			if got.Message == "" || !strings.Contains(text(res), got.Message) {
				t.Fatalf("the agent gets no clear message: message %q, text %q", got.Message, text(res))
			}
			if tt.leak != "" && strings.Contains(strings.ToLower(text(res)), tt.leak) {
				t.Fatalf("the agent sees the backend's internal error %q: %s", tt.leak, text(res))
			}
			if tt.wantStatus == storage.StatusExecuted && got.Result["refund_id"] != "re_"+got.ActionID {
				t.Fatalf("result = %v, want the refund the backend made with key %s", got.Result, got.ActionID)
			}

			outcomes := func() []storage.Record {
				var out []storage.Record
				for _, r := range readRecords(t, d.DB, storage.Filter{ActionID: got.ActionID}) {
					if r.Phase == storage.PhaseOutcome {
						out = append(out, r)
					}
				}
				return out
			}
			act, err := d.DB.Action(ctx, got.ActionID)
			if err != nil {
				t.Fatal(err)
			}
			if act.Status != tt.wantStatus {
				t.Fatalf("action status %s, the agent was told %s", act.Status, tt.wantStatus)
			}
			if tt.wantStatus == storage.StatusExecuting {
				// Unknown: no outcome yet, and the agent told not to retry.
				// Recover settles it once the payments system answers again.
				if o := outcomes(); len(o) != 0 {
					t.Fatalf("outcome records %+v for an action whose fate is unknown", o)
				}
				if !strings.Contains(got.Message, "Do not retry") {
					t.Fatalf("message %q, want the agent told not to retry", got.Message)
				}
				down.Lock()
				lookupDown = false
				down.Unlock()
				// Recovery believes "not done" only once every request the
				// action sent is past its deadline (execute's budget, twice
				// the timeout, after it was recorded executing).
				time.Sleep(time.Until(act.UpdatedAt.Add(2*timeout + 10*time.Millisecond)))
				rep, err := tools.Recover(ctx, d, 0)
				if err != nil {
					t.Fatalf("recover: %v", err)
				}
				want := tools.RecoverReport{Executed: 1}
				if tt.settled == storage.StatusFailed {
					want = tools.RecoverReport{NotExecuted: 1}
				}
				if rep != want {
					t.Fatalf("recover: %+v, want %+v", rep, want)
				}
				tt.wantStatus = tt.settled
				if act, err = d.DB.Action(ctx, got.ActionID); err != nil || act.Status != tt.settled {
					t.Fatalf("after recover: %+v, %v; want %s", act, err, tt.settled)
				}
			}
			o := outcomes()
			if len(o) != 1 || o[0].Outcome != tt.wantStatus {
				t.Fatalf("outcome records %+v, want exactly one %s", o, tt.wantStatus)
			}
			attempt := readRecords(t, d.DB, storage.Filter{ActionID: got.ActionID})[0]
			if gap := o[0].Time.Sub(attempt.Time); gap > 2*timeout+slack {
				t.Fatalf("outcome recorded %v after the attempt; the backend timeout is %v", gap, timeout)
			}
			made.mu.Lock()
			_, inBackend := made.refunds[got.ActionID]
			made.mu.Unlock()
			if inBackend != (tt.wantStatus == storage.StatusExecuted) {
				t.Fatalf("backend made the refund: %v; recorded outcome %s", inBackend, tt.wantStatus)
			}
		})
	}
}
