package tools_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// liveEnv is a server's dependencies with the shipped policy recorded as
// live, as `mandate serve` leaves them.
type liveEnv struct {
	d  *tools.Deps
	db *storage.DB
	st *store.Store
}

func newLiveEnv(t *testing.T) *liveEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, _, err := store.OpenSeeded(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &liveEnv{db: db, st: st}
	e.d = &tools.Deps{Agent: "demo-agent", DB: db, Logger: slog.New(slog.DiscardHandler),
		Backend: backend.Backend{Payments: st, Orders: st, Customers: st}, ModelFile: "model.conf", PolicyFile: "/srv/policy.csv"}
	e.d.Policy = policy.NewEngine(e.load(t, string(mandate.DefaultPolicy), true))
	return e
}

// load loads text as the policy and, if record, records it as live, with
// the shipped rates the environment converts with, as a server does.
func (e *liveEnv) load(t *testing.T, text string, record bool) *policy.Policy {
	t.Helper()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: []byte(text)})
	if err != nil {
		t.Fatal(err)
	}
	if record {
		if err := e.db.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: pol.Version, Policy: text,
			ModelFile: "model.conf", PolicyFile: "/srv/policy.csv", Command: "serve reload", Identity: "demo-agent"}); err != nil {
			t.Fatal(err)
		}
		if err := e.db.RecordRates(context.Background(), &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base,
			File: "embedded rates.csv", Command: "serve reload", Identity: "demo-agent"}); err != nil {
			t.Fatal(err)
		}
	}
	return pol
}

// approvedRefund asks for a refund of 150.00 on ord_1002 through the real
// guard and records alice's approval, as a server that then stopped before
// claiming it would leave it.
func (e *liveEnv) approvedRefund(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	res, err := handler(t, e.d, "refund_order")(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.StructuredContent.(*tools.ActionResult).ActionID
	if _, err := e.db.Decide(ctx, id, storage.Review{Approver: "alice"}, func(*storage.Action, storage.Usage) (storage.Review, error) {
		return storage.Review{Approve: true, Comment: "goodwill", Decision: policy.Allow, Rule: "approve rule"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *liveEnv) trail(t *testing.T, id string) []*storage.Record {
	t.Helper()
	var out []*storage.Record
	if err := e.db.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRecoverUnderLivePolicy: recovery carries out an approved action only
// if the live policy, asked again in the transaction that claims it, still
// lets the agent have it and the approver approve it. A rule added after
// the approval stops it (denied, audited, no refund); a process holding a
// policy that is not the live one leaves it alone, and says so once in the
// audit trail however often it retries.
func TestRecoverUnderLivePolicy(t *testing.T) {
	ctx := context.Background()
	shipped := string(mandate.DefaultPolicy)
	tests := []struct {
		name       string
		policy     string // the policy recorded as live after the approval
		swap       bool   // this process reloads it too
		want       tools.RecoverReport
		wantStatus string
		refunded   int64
		wantLast   []string // outcome, agent, and a substring of error of the action's last audit record
	}{
		{name: "policy unchanged: carried out", policy: shipped, swap: true,
			want: tools.RecoverReport{Resumed: 1}, wantStatus: storage.StatusExecuted, refunded: 15000,
			wantLast: []string{storage.StatusExecuted, "demo-agent", ""}},
		{name: "emergency deny rule added after the approval", policy: shipped + "\np, *, refund_order, true, deny\n", swap: true,
			want: tools.RecoverReport{Refused: 1}, wantStatus: storage.StatusDenied,
			wantLast: []string{storage.StatusDenied, storage.RecoveryAgent, "the rules now refuse it: policy.csv:"}},
		{name: "approver's role removed after the approval", policy: strings.Replace(shipped, "g, alice, supervisor\n", "", 1), swap: true,
			want: tools.RecoverReport{Refused: 1}, wantStatus: storage.StatusDenied,
			wantLast: []string{storage.StatusDenied, storage.RecoveryAgent, "no longer let alice approve it"}},
		{name: "another process recorded a newer policy", policy: shipped + "\n# edited\n", swap: false,
			want: tools.RecoverReport{Stale: 1}, wantStatus: storage.StatusApproved,
			wantLast: []string{storage.OutcomeRefused, storage.RecoveryAgent, "stale policy: this process holds policy version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newLiveEnv(t)
			id := e.approvedRefund(t)
			pol := e.load(t, tt.policy, true)
			if tt.swap {
				e.d.Policy.Swap(pol)
			}
			e.d.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
			for range 2 { // a second pass changes nothing and records nothing more
				rep, err := tools.Recover(ctx, e.d, time.Minute)
				if err != nil || rep != tt.want {
					t.Fatalf("Recover = %+v, %v; want %+v", rep, err, tt.want)
				}
				tt.want = tools.RecoverReport{Stale: tt.want.Stale}
			}
			act, err := e.db.Action(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if act.Status != tt.wantStatus {
				t.Fatalf("status %s, want %s", act.Status, tt.wantStatus)
			}
			if o, _ := e.st.Order(ctx, "ord_1002"); o.Refunded.Minor != tt.refunded {
				t.Fatalf("refunded %s, want %d minor units", o.Refunded, tt.refunded)
			}
			recs := e.trail(t, id)
			last := recs[len(recs)-1]
			if last.Outcome != tt.wantLast[0] || last.Agent != tt.wantLast[1] || !strings.Contains(last.Error, tt.wantLast[2]) {
				t.Fatalf("last audit record outcome %q agent %q error %q; want %q", last.Outcome, last.Agent, last.Error, tt.wantLast)
			}
			if len(recs) != 3 { // attempt, approval, then the one outcome, denial or refusal
				t.Fatalf("%d audit records for the action, want 3", len(recs))
			}
			if tt.wantStatus == storage.StatusDenied {
				if last.Approver != "alice" || last.Comment != "goodwill" {
					t.Fatalf("denial record approver %q comment %q, want alice's approval named", last.Approver, last.Comment)
				}
			}
			if _, err := e.db.Verify(ctx); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestApproveUnderLivePolicy: approval in a process whose policy is not
// the live one is refused with a message naming both, recorded, and leaves
// the action pending; once the process reloads the live policy, a deny rule
// in it denies the action.
func TestApproveUnderLivePolicy(t *testing.T) {
	ctx := context.Background()
	e := newLiveEnv(t)
	res, err := handler(t, e.d, "refund_order")(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.StructuredContent.(*tools.ActionResult).ActionID
	kill := e.load(t, string(mandate.DefaultPolicy)+"\np, *, refund_order, true, deny\n", true)

	_, err = tools.Approve(ctx, e.d, id, "alice", "ok")
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(err.Error(), "live policy is version "+kill.Version) ||
		!strings.Contains(err.Error(), "holds policy version "+e.d.Policy.Policy().Version+" from /srv/policy.csv") {
		t.Fatalf("Approve under a stale policy: %v", err)
	}
	if act, _ := e.db.Action(ctx, id); act.Status != storage.StatusPending {
		t.Fatalf("status %s, want pending", act.Status)
	}
	recs := e.trail(t, id)
	if last := recs[len(recs)-1]; last.Outcome != storage.OutcomeRefused || last.Approver != "alice" || !strings.HasPrefix(last.Error, "stale policy:") {
		t.Fatalf("refusal record %+v", last)
	}

	e.d.Policy.Swap(kill)
	act, err := tools.Approve(ctx, e.d, id, "alice", "ok")
	if mandate.ErrorCode(err) != mandate.EDENIED || act == nil || act.Status != storage.StatusDenied {
		t.Fatalf("Approve under the live emergency rule = %v, %v; want denied", act, err)
	}
	recs = e.trail(t, id)
	last := recs[len(recs)-1]
	if last.Outcome != storage.StatusDenied || last.Approver != "alice" || last.Comment != "ok" || !strings.Contains(last.Error, "p, *, refund_order, true, deny") {
		t.Fatalf("denial record %+v", last)
	}
	if o, _ := e.st.Order(ctx, "ord_1002"); o.Refunded.Minor != 0 {
		t.Fatalf("refunded %s, want nothing", o.Refunded)
	}
}
