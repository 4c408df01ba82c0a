package tools

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// approvalEnv is the real path: the shipped policy, a gateway database and
// the embedded store seeded with the demo shop, in temporary files.
type approvalEnv struct {
	d     *Deps
	st    *store.Store
	path  string // the gateway database
	skew  atomic.Int64
	tools map[string]server.ServerTool
}

func newApprovalEnv(t *testing.T, policyText []byte) *approvalEnv {
	t.Helper()
	ctx := context.Background()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: policyText})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &approvalEnv{path: filepath.Join(dir, "mandate.db")}
	db, err := storage.Open(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.Now = e.now
	// A server records the policy and rates it decides under; approvals act
	// only under them.
	if err := db.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	st, _, err := store.OpenSeeded(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	e.d = &Deps{Policy: policy.NewEngine(pol), DB: db, Now: e.now, ApprovalTTL: time.Hour,
		Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}
	e.tools = map[string]server.ServerTool{}
	for _, s := range ServerTools(e.d) {
		e.tools[s.Tool.Name] = s
	}
	return e
}

// now is the real time moved on by the skew a test sets.
func (e *approvalEnv) now() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }

func (e *approvalEnv) call(t *testing.T, agent, tool string, args map[string]any, out any) {
	t.Helper()
	ctx := WithAgent(context.Background(), agent)
	res, err := e.tools[tool].Handler(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s result %s: %v", tool, b, err)
	}
}

// pendingRefund asks for a refund through the real guard and returns the
// pending action's id.
func (e *approvalEnv) pendingRefund(t *testing.T, agent, order, amount string) string {
	t.Helper()
	var res ActionResult
	e.call(t, agent, "refund_order", map[string]any{"order_id": order, "amount": amount, "reason": "late delivery"}, &res)
	if res.Decision != policy.RequireApproval || res.Status != storage.StatusPending {
		t.Fatalf("refund of %s on %s by %s: %+v, want a pending approval", amount, order, agent, res)
	}
	return res.ActionID
}

func (e *approvalEnv) status(t *testing.T, agent, id string) ActionStatus {
	t.Helper()
	var st ActionStatus
	e.call(t, agent, "get_action_status", map[string]any{"action_id": id}, &st)
	return st
}

func (e *approvalEnv) refunded(t *testing.T, order string) string {
	t.Helper()
	o, err := e.st.Order(context.Background(), order)
	if err != nil {
		t.Fatal(err)
	}
	return o.Refunded.String()
}

// rewrite runs q on the gateway database from a connection of its own, as
// a writer of the actions table (not the guard) would.
func (e *approvalEnv) rewrite(t *testing.T, q string, args ...any) {
	t.Helper()
	raw, err := sql.Open("sqlite", storage.DSN(e.path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (e *approvalEnv) approvalRecords(t *testing.T, id string) []string {
	t.Helper()
	var out []string
	err := e.d.DB.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
		out = append(out, r.Phase+"/"+r.Outcome+"/"+r.Agent)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestApprove(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		policy     string // replaces the shipped policy's text old→new, if set
		agent      string
		amount     string
		approver   string
		deny       bool
		before     func(t *testing.T, e *approvalEnv)
		wantErr    string // error code
		wantStatus string // the agent's view afterwards
		refunded   string // ord_1002 afterwards
		wantTrail  []string
	}{
		{name: "supervisor approves: executes once", agent: "demo-agent", amount: "150.00", approver: "alice",
			wantStatus: storage.StatusExecuted, refunded: "150.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/approved/alice", "outcome/executed/demo-agent"}},
		{name: "supervisor denies", agent: "demo-agent", amount: "150.00", approver: "bob", deny: true,
			wantStatus: storage.StatusDenied, refunded: "0.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/denied/bob"}},
		{name: "requester cannot approve its own action", agent: "demo-agent", amount: "150.00", approver: "demo-agent",
			wantErr: mandate.EDENIED, wantStatus: storage.StatusPending, refunded: "0.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/refused/demo-agent"}},
		{name: "an agent without an approval rule cannot approve", agent: "demo-agent", amount: "150.00", approver: "senior-bot",
			wantErr: mandate.EDENIED, wantStatus: storage.StatusPending, refunded: "0.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/refused/senior-bot"}},
		{name: "approver's own limit", policy: "amount_base <= 2000.00, allow|amount_base <= 100.00, allow",
			agent: "demo-agent", amount: "150.00", approver: "alice",
			wantErr: mandate.EDENIED, wantStatus: storage.StatusPending, refunded: "0.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/refused/alice"}},
		{name: "expired", agent: "demo-agent", amount: "150.00", approver: "alice",
			before:  func(t *testing.T, e *approvalEnv) { e.skew.Store(int64(2 * time.Hour)) },
			wantErr: mandate.ECONFLICT, wantStatus: storage.StatusExpired, refunded: "0.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/expired/" + storage.ExpiryAgent}},
		{name: "arguments rewritten in the actions row, digest and all: refused, nothing done", agent: "demo-agent", amount: "150.00", approver: "alice",
			before: func(t *testing.T, e *approvalEnv) {
				forged := `{"amount":"1500.00","order_id":"ord_1002","reason":"late delivery"}`
				e.rewrite(t, `UPDATE actions SET args = ?, args_digest = ? WHERE status = 'pending'`, forged, storage.Digest([]byte(forged)))
			},
			wantErr: mandate.ECONFLICT, wantStatus: storage.StatusPending, refunded: "0.00",
			wantTrail: []string{"attempt/pending/demo-agent", "approval/refused/alice"}},
		{name: "no longer refundable: the current policy denies it", agent: "senior-bot", amount: "1500.00", approver: "alice",
			before: func(t *testing.T, e *approvalEnv) {
				if _, err := e.st.Refund(ctx, backend.RefundRequest{OrderID: "ord_1002", Amount: mandate.Money{Minor: 200000, Currency: "USD"},
					Reason: "elsewhere", IdempotencyKey: "k1"}); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: mandate.EDENIED, wantStatus: storage.StatusDenied, refunded: "2000.00",
			wantTrail: []string{"attempt/pending/senior-bot", "approval/denied/alice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := string(mandate.DefaultPolicy)
			if tt.policy != "" {
				old, repl, _ := strings.Cut(tt.policy, "|")
				text = strings.Replace(text, old, repl, 1)
			}
			e := newApprovalEnv(t, []byte(text))
			id := e.pendingRefund(t, tt.agent, "ord_1002", tt.amount)
			if tt.before != nil {
				tt.before(t, e)
			}
			var act *storage.Action
			var err error
			if tt.deny {
				act, err = Deny(ctx, e.d, id, tt.approver, "already compensated <b>by phone</b>")
			} else {
				act, err = Approve(ctx, e.d, id, tt.approver, "fine")
			}
			if code := mandate.ErrorCode(err); code != tt.wantErr {
				t.Fatalf("error = %v, want code %q", err, tt.wantErr)
			}
			if err == nil && act.Status != tt.wantStatus {
				t.Fatalf("returned status %q, want %q", act.Status, tt.wantStatus)
			}
			st := e.status(t, tt.agent, id)
			if st.Status != tt.wantStatus {
				t.Fatalf("get_action_status = %+v, want %s", st, tt.wantStatus)
			}
			if got := e.refunded(t, "ord_1002"); got != tt.refunded {
				t.Fatalf("ord_1002 refunded %s, want %s", got, tt.refunded)
			}
			trail := e.approvalRecords(t, id)
			if strings.Join(trail, " ") != strings.Join(tt.wantTrail, " ") {
				t.Fatalf("audit trail:\n got %v\nwant %v", trail, tt.wantTrail)
			}
			switch tt.wantStatus {
			case storage.StatusExecuted:
				if st.DecidedBy != tt.approver || len(st.Result) == 0 || !strings.Contains(st.Message, "approved") {
					t.Fatalf("executed status lacks approver or result: %+v", st)
				}
			case storage.StatusDenied:
				if st.DecidedBy != tt.approver || st.Comment == "" || !strings.Contains(st.Message, st.Comment) {
					t.Fatalf("denied status lacks approver or comment: %+v", st)
				}
			}
		})
	}
}

func TestApproveOtherTools(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	var res ActionResult
	e.call(t, "demo-agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada.l@example.com", "reason": "Customer moved to a new provider"}, &res)
	if res.Status != storage.StatusPending {
		t.Fatalf("email change: %+v, want pending", res)
	}
	act, err := Approve(ctx, e.d, res.ActionID, "bob", "")
	if err != nil || act.Status != storage.StatusExecuted {
		t.Fatalf("Approve = %+v, %v; want executed", act, err)
	}
	c, err := e.st.Customer(ctx, "cus_ada")
	if err != nil || c.Email != "ada.l@example.com" {
		t.Fatalf("cus_ada email = %q, %v", c.Email, err)
	}
	if _, err := Approve(ctx, e.d, res.ActionID, "alice", ""); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("approving again: %v, want conflict", err)
	}
	if _, err := Deny(ctx, e.d, "act_missing", "alice", "no"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("unknown action: %v, want not_found", err)
	}
	if _, err := Deny(ctx, e.d, res.ActionID, "alice", ""); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("deny without comment: %v, want invalid", err)
	}
}

// TestApproveOnlyWithLiveRates: limits compare money in the base currency,
// so an approval converts with the rates the servers recorded as live, or
// is refused. bob may approve up to 100.00 USD; a 150.00 EUR refund is
// 162.63 USD at the shipped rates. Approving from a process holding other
// rates (approvals --rates FILE, an admin host's old rates.csv), where it
// would be 75.00 USD, is refused and audited, nothing is refunded, and the
// action stays pending; once the servers record those rates as live, the
// process holding the shipped ones is refused instead.
func TestApproveOnlyWithLiveRates(t *testing.T) {
	ctx := context.Background()
	pol := strings.Replace(string(mandate.DefaultPolicy), "approve_refund_order, amount_base <= 2000.00", "approve_refund_order, amount_base <= 100.00", 1)
	e := newApprovalEnv(t, []byte(pol))
	id := e.pendingRefund(t, "demo-agent", "ord_1015", "150.00")
	cheap, err := rates.Parse("/home/bob/cheap-rates.csv", []byte("base, USD\nEUR, 0.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	bobs := *e.d
	bobs.Rates = rates.NewLive(cheap)
	refused := func(d *Deps, held, live string) {
		t.Helper()
		act, err := Approve(ctx, d, id, "bob", "")
		var stale *storage.StaleRatesError
		if !errors.As(err, &stale) || mandate.ErrorCode(err) != mandate.ECONFLICT || act != nil ||
			!strings.Contains(err.Error(), "exchange rates version "+held) || !strings.Contains(err.Error(), "the live rates are version "+live) {
			t.Fatalf("Approve with rates %s while %s are live = %+v, %v; want a stale-rates conflict naming both", held, live, act, err)
		}
		if got := e.refunded(t, "ord_1015"); got != "200.00" {
			t.Fatalf("ord_1015 refunded %s, want 200.00 as before", got)
		}
		if st := e.status(t, "demo-agent", id); st.Status != storage.StatusPending {
			t.Fatalf("status %s, want pending", st.Status)
		}
		var last *storage.Record
		if err := e.d.DB.Records(ctx, storage.Filter{ActionID: id}, func(r *storage.Record) error { last = r; return nil }); err != nil {
			t.Fatal(err)
		}
		if last.Outcome != storage.OutcomeRefused || last.Approver != "bob" || !strings.HasPrefix(last.Error, "stale rates: ") {
			t.Fatalf("last audit record %+v, want bob's refusal for stale rates", last)
		}
	}
	shipped := rates.Default()
	refused(&bobs, cheap.Version, shipped.Version)
	if _, err := Approve(ctx, e.d, id, "bob", ""); mandate.ErrorCode(err) != mandate.EDENIED {
		t.Fatalf("bob approving 162.63 USD with the live rates: %v, want denied by his limit", err)
	}

	// The servers reload the cheap rates: they are live now, and only they.
	if err := e.d.DB.RecordRates(ctx, &storage.RatesLoad{Version: cheap.Version, Base: cheap.Base, File: cheap.Name, Command: "serve reload"}); err != nil {
		t.Fatal(err)
	}
	refused(e.d, shipped.Version, cheap.Version)
	act, err := Approve(ctx, &bobs, id, "bob", "")
	if err != nil || act.Status != storage.StatusExecuted {
		t.Fatalf("bob approving 75.00 USD with the live rates = %+v, %v; want executed", act, err)
	}
}

// TestApproveRace has two approvers on two database handles (two admin
// processes) approve the same action at once, and in other rounds an
// approver race the expiry sweep: the refund is made at most once, and
// exactly once when an approval wins.
func TestApproveRace(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	db2, err := storage.Open(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	db2.Now = e.now
	d2 := *e.d
	d2.DB = db2
	want := int64(0)
	for round := range 4 {
		id := e.pendingRefund(t, "demo-agent", "ord_1002", "60.00")
		var wg sync.WaitGroup
		var executed atomic.Int32
		for i, d := range []*Deps{e.d, &d2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if round%2 == 1 && i == 1 {
					if _, err := d.DB.ExpirePending(ctx, e.now().Add(2*time.Hour)); err != nil {
						t.Error(err)
					}
					return
				}
				act, err := Approve(ctx, d, id, []string{"alice", "bob"}[i], "")
				if err == nil && act.Status == storage.StatusExecuted {
					executed.Add(1)
				} else if err != nil && mandate.ErrorCode(err) != mandate.ECONFLICT {
					t.Errorf("Approve: %v", err)
				}
			}()
		}
		wg.Wait()
		st := e.status(t, "demo-agent", id)
		switch executed.Load() {
		case 1:
			want += 6000
			if st.Status != storage.StatusExecuted {
				t.Fatalf("round %d: one execution but status %s", round, st.Status)
			}
		case 0:
			if round%2 == 0 || st.Status != storage.StatusExpired {
				t.Fatalf("round %d: no execution, status %s", round, st.Status)
			}
		default:
			t.Fatalf("round %d: executed %d times", round, executed.Load())
		}
		o, err := e.st.Order(ctx, "ord_1002")
		if err != nil {
			t.Fatal(err)
		}
		if o.Refunded.Minor != want {
			t.Fatalf("round %d: refunded %d minor units, want %d", round, o.Refunded.Minor, want)
		}
	}
}

// TestRecoveryExecutesOnlyApprovalsInTheTrail: the actions row is not
// chained, so a writer of it can mark a pending refund approved by alice and
// raise its amount (digest left stale, or the row disagreeing with its
// records). Recovery carries out approved actions a stopped server never
// claimed; it must check the row as an approval does, leave this one alone
// and audit the refusal.
func TestRecoveryExecutesOnlyApprovalsInTheTrail(t *testing.T) {
	for _, c := range []struct {
		name, args string
	}{
		{"amount rewritten, digest stale", `{"amount":"200.00","order_id":"ord_1002","reason":"late delivery"}`},
		{"marked approved, arguments as requested", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			e := newApprovalEnv(t, mandate.DefaultPolicy)
			id := e.pendingRefund(t, "demo-agent", "ord_1002", "150.00")
			q, args := `UPDATE actions SET status = 'approved', approver = 'alice' WHERE id = ?`, []any{id}
			if c.args != "" {
				q, args = `UPDATE actions SET status = 'approved', approver = 'alice', args = ? WHERE id = ?`, []any{c.args, id}
			}
			e.rewrite(t, q, args...)
			e.skew.Store(int64(2 * time.Minute))
			rep, err := Recover(ctx, e.d, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.refunded(t, "ord_1002"); got != "0.00" || rep.Resumed != 0 || rep.Untrusted != 1 {
				t.Fatalf("recovery: %+v; ord_1002 refunded %s with no approval in the trail (%v); want nothing done and 1 untrusted",
					rep, got, e.approvalRecords(t, id))
			}
			// Later passes (every --recover-after/2) refuse it again, but
			// record the refusal only once.
			for pass := 2; pass <= 4; pass++ {
				e.skew.Store(int64(time.Duration(pass) * 2 * time.Minute))
				if rep, err := Recover(ctx, e.d, time.Minute); err != nil || rep.Untrusted != 1 {
					t.Fatalf("pass %d: %+v, %v", pass, rep, err)
				}
			}
			recs, refusals := e.approvalRecords(t, id), 0
			for _, r := range recs {
				if r == storage.PhaseApproval+"/"+storage.OutcomeRefused+"/"+storage.RecoveryAgent {
					refusals++
				}
			}
			if refusals != 1 {
				t.Fatalf("records after 4 recovery passes %v: %d refusals audited, want 1", recs, refusals)
			}
			act, err := e.d.DB.Action(ctx, id)
			if err != nil || act.Status != storage.StatusApproved {
				t.Fatalf("action after recovery: %+v, %v; want it left approved for a person to deny", act, err)
			}
		})
	}
}

// TestApprovedRefundCountsFromWhenItRan: an approved refund is debited in
// the minute a person approved it, when it actually happens, not the
// minute the agent asked. Counted from the request, a 150.00 refund
// approved after 23 hours left agent_refunded_24h an hour after it was
// made, and the agent could refund up to its whole limit again without a
// person. The trail's cross-check agrees with where it was counted.
func TestApprovedRefundCountsFromWhenItRan(t *testing.T) {
	ctx := context.Background()
	// A support agent may refund 180.00 in 24 h without a person.
	text := strings.Replace(string(mandate.DefaultPolicy), "agent_refunded_24h + amount_base > 500.00, require_approval", "agent_refunded_24h + amount_base > 180.00, require_approval", 1)
	if text == string(mandate.DefaultPolicy) {
		t.Fatal("the shipped policy no longer has the 500.00 rule this test lowers")
	}
	e := newApprovalEnv(t, []byte(text))
	e.d.ApprovalTTL = 24 * time.Hour // the default of --approval-ttl

	id := e.pendingRefund(t, "demo-agent", "ord_1002", "150.00")
	e.skew.Store(int64(23 * time.Hour))
	act, err := Approve(ctx, e.d, id, "alice", "ok")
	if err != nil || act.Status != storage.StatusExecuted {
		t.Fatalf("approve: %v %+v", err, act)
	}
	ranAt := e.now()

	e.skew.Store(int64(24*time.Hour + 5*time.Minute))
	u, err := e.d.DB.Usage(ctx, &storage.Action{Agent: "demo-agent", Tool: "refund_order", CustomerID: "cus_ada", Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	var res ActionResult
	e.call(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "40.00", "reason": "late"}, &res)
	if u.AgentRefundedMinor24h != 15000 || res.Decision != policy.RequireApproval {
		t.Fatalf("refund of 150.00 executed %s ago: agent_refunded_24h counts %d minor units (want 15000), and a further 40.00 is %q (%s), want require_approval",
			e.now().Sub(ranAt).Round(time.Minute), u.AgentRefundedMinor24h, res.Decision, res.Rule)
	}
	cc, err := e.d.DB.CrossCheck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Disagreements) != 0 {
		t.Fatalf("cross-check after an approved refund: %v", cc.Disagreements)
	}
}

// TestApprovedRevertIsRedecidedAsRevert: a person's revert of an agent's
// account change is an update_account action decided as
// revert_update_account. When that rule requires approval, the approval
// must be decided again as revert_update_account too: asked as
// update_account (for which a person has no rule), every approval became
// a denial and the change could never be put back.
func TestApprovedRevertIsRedecidedAsRevert(t *testing.T) {
	ctx := context.Background()
	text := strings.Replace(string(mandate.DefaultPolicy),
		"p, supervisor, revert_update_account, true, allow", "p, supervisor, revert_update_account, true, require_approval", 1)
	if text == string(mandate.DefaultPolicy) {
		t.Fatal("the shipped policy no longer has the revert rule this test changes")
	}
	e := newApprovalEnv(t, []byte(text))
	var r ActionResult
	e.call(t, "senior-bot", "update_account", map[string]any{"customer_id": "cus_ada", "field": "email", "value": "x@attacker.example", "reason": "asked"}, &r)
	if r.Status != storage.StatusExecuted {
		t.Fatalf("change: %+v", r)
	}
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-time.Hour), "")
	if err != nil || len(plan.Revert) != 1 {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	res := ApplyRemediation(ctx, e.d, "alice", plan)
	if len(res) != 1 || res[0].Status != "pending" {
		t.Fatalf("apply: %+v, want the revert pending for another person", res)
	}
	act, err := Approve(ctx, e.d, res[0].RevertID, "bob", "yes, put it back")
	c, _ := e.st.Customer(ctx, "cus_ada")
	if err != nil || act.Status != storage.StatusExecuted || c.Email != "ada@example.com" {
		st := ""
		if act != nil {
			st = act.Status
		}
		t.Fatalf("bob approving alice's revert: status %q, err %v; cus_ada email %q, want the revert executed and ada@example.com back", st, err, c.Email)
	}
}

// TestPolicyToolIsBelievedOnlyForReverts: policy_tool is on the unchained
// actions row. A writer of it setting get_order on a pending refund must
// not have the refund's approval judged as a lookup, past an emergency
// deny on refund_order: only revert_update_account on a revert's
// update_account row is believed.
func TestPolicyToolIsBelievedOnlyForReverts(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	id := e.pendingRefund(t, "demo-agent", "ord_1002", "150.00")
	e.rewrite(t, `UPDATE actions SET policy_tool = 'get_order' WHERE id = ?`, id)
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: append(append([]byte{}, mandate.DefaultPolicy...), "\np, *, refund_order, true, deny\n"...)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.DB.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	e.d.Policy.Swap(pol)
	act, err := Approve(ctx, e.d, id, "alice", "ok")
	st := ""
	if act != nil {
		st = act.Status
	}
	if got := e.refunded(t, "ord_1002"); got != "0.00" || st == storage.StatusExecuted {
		t.Fatalf("approval under p, *, refund_order, true, deny of a refund whose row says policy_tool get_order: status %q, err %v, ord_1002 refunded %s; want it denied", st, err, got)
	}
}

// TestAgentRevertKeyIsNotARevert: an agent may send any idempotency key,
// revert:act_… included. Its change of a field another agent changed is a
// change, not a revert: remediation planning says it changed the field
// again, never that a person already reverted it.
func TestAgentRevertKeyIsNotARevert(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	var first, second ActionResult
	e.call(t, "senior-bot", "update_account", map[string]any{"customer_id": "cus_ada", "field": "name", "value": "Ada X", "reason": "asked"}, &first)
	if first.Status != storage.StatusExecuted {
		t.Fatalf("change: %+v", first)
	}
	e.call(t, "demo-agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "name", "value": "Ada Y", "reason": "asked",
		"idempotency_key": RevertKeyPrefix + first.ActionID}, &second)
	if second.Status != storage.StatusExecuted {
		t.Fatalf("demo-agent's change: %+v", second)
	}
	plan, err := PlanRemediation(ctx, e.d, "senior-bot", time.Now().Add(-time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range append(plan.Revert, plan.Skipped...) {
		if it.ActionID == first.ActionID && strings.Contains(it.Why, "already reverted") {
			t.Fatalf("plan says %s was %q, after %s (status %s) by an agent with a revert: key", first.ActionID, it.Why, second.ActionID, second.Status)
		}
	}
}

// TestExecuteBudgetFromRecording: the backend calls for an action end
// within the budget counted from when the action was recorded as
// executing (its updated_at, which recovery's grace is counted from), not
// from when execute starts. A process that stalled after recording it
// past the budget (a slow commit, a paused VM) may already have been
// overtaken by recovery in another process, so it makes no call: the
// action fails with nothing sent. Without the stall the same call goes
// through.
func TestExecuteBudgetFromRecording(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	d := withDefaults(e.d)
	s := refundOrder().(spec[refundArgs])
	run := func(stalled time.Duration) *storage.Action {
		t.Helper()
		a := refundArgs{OrderID: "ord_1002", Amount: "1.00", Reason: "late delivery"}
		if _, err := s.load(ctx, d, &a); err != nil {
			t.Fatal(err)
		}
		args := canonical(a)
		act := &storage.Action{ID: newActionID(), Agent: "demo-agent", Tool: "refund_order", Args: args}
		act.CustomerID, act.AmountMinor, act.Currency = a.scope()
		if err := d.DB.DecideAndRecord(ctx, act, &storage.Record{Agent: "demo-agent", Tool: "refund_order", Args: args}, func(storage.Usage) {
			act.Decision, act.Status = policy.Allow, storage.StatusExecuting
		}); err != nil {
			t.Fatal(err)
		}
		if act.Began.IsZero() {
			t.Fatal("DecideAndRecord did not note when the action began executing")
		}
		act.Began = act.Began.Add(-stalled)
		execute(ctx, d, s, &a, act, d.Logger, false)
		got, err := d.DB.Action(ctx, act.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	refunded := func() int64 {
		o, err := e.st.Order(ctx, "ord_1002")
		if err != nil {
			t.Fatal(err)
		}
		return o.Refunded.Minor
	}
	before := refunded()
	if act := run(execBudget(d) + time.Second); act.Status != storage.StatusFailed || refunded() != before {
		t.Fatalf("stalled past the budget: %s (%s), refunded %d -> %d; want failed and nothing sent", act.Status, act.Error, before, refunded())
	}
	if act := run(0); act.Status != storage.StatusExecuted || refunded() != before+100 {
		t.Fatalf("without a stall: %s (%s), refunded %d -> %d; want executed", act.Status, act.Error, before, refunded())
	}
}
