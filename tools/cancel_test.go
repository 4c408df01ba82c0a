package tools_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

// cancellingOrders reads orders from the fake backend, but first cancels
// the call: the client gives up while the guard is reading facts.
type cancellingOrders struct {
	*fakeBackend
	cancel context.CancelFunc
}

func (c cancellingOrders) Order(ctx context.Context, id string) (backend.Order, error) {
	c.cancel()
	return c.fakeBackend.Order(ctx, id)
}

// TestCancelBeforeRecordDoesNothing: a call cancelled (notifications/
// cancelled, or stdin closed) before its attempt is durably recorded is
// refused with nothing recorded and nothing done, whether the cancel came
// before the call reached the guard or while the guard read the facts.
func TestCancelBeforeRecordDoesNothing(t *testing.T) {
	t.Parallel()
	for _, when := range []string{"before the call", "while reading facts"} {
		for _, name := range []string{"refund_order", "cancel_order", "update_account", "get_order"} {
			if name == "get_order" && when != "before the call" {
				continue // a lookup reads nothing before its record
			}
			t.Run(when+"/"+name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
				ctx, cancel := context.WithCancel(tools.WithAgent(context.Background(), "tester"))
				defer cancel()
				switch when {
				case "before the call":
					cancel()
				case "while reading facts":
					h.deps.Backend.Orders = cancellingOrders{h.be, cancel}
					h.deps.Backend.Customers = customersCancelling{h.be, cancel}
				}
				args := map[string]any{}
				for k, v := range validArgs[name] {
					args[k] = v
				}
				if policy.Tools[name].Action {
					args["idempotency_key"] = "k-" + name
				}
				res := h.call(ctx, name, args)
				got := decode(t, res)
				if !res.IsError || got.Error != mandate.EUNAVAILABLE || !strings.Contains(got.Message, "nothing was done") {
					t.Fatalf("isError=%v %+v, want unavailable: cancelled, nothing was done", res.IsError, got)
				}
				checkNoWrites(t, name, h.be)
				if recs := h.records(); len(recs) != 0 {
					t.Fatalf("%d audit records after a cancel before recording, want none: %+v", len(recs), recs)
				}
				if policy.Tools[name].Action {
					// Nothing recorded, so the key finds nothing: safe to retry.
					st := h.call(tools.WithAgent(context.Background(), "tester"), "get_action_status", map[string]any{"idempotency_key": "k-" + name})
					if got := decode(t, st); got.Error != mandate.ENOTFOUND {
						t.Fatalf("status by key after the cancel: %+v, want not_found", got)
					}
				}
			})
		}
	}
}

// customersCancelling cancels the call when the customer is read, for
// update_account, which reads no order.
type customersCancelling struct {
	*fakeBackend
	cancel context.CancelFunc
}

func (c customersCancelling) Customer(ctx context.Context, id string) (backend.Customer, error) {
	c.cancel()
	return c.fakeBackend.Customer(ctx, id)
}

// TestCancelAfterRecordIsFindable: a cancel that arrives once the attempt
// is recorded (here, while the backend acts) does not stop the action: it
// runs to its end, its outcome is recorded, and the agent finds it by its
// idempotency key. Another agent's lookup of the same key finds nothing.
func TestCancelAfterRecordIsFindable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, policyFrom(t, allowAllBut("")+"p, other, get_action_status, true, allow\ng, other, testers\n"), nil)
	ctx, cancel := context.WithCancel(tools.WithAgent(context.Background(), "tester"))
	defer cancel()
	h.be.OnRefund = func(bctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
		cancel()
		if err := bctx.Err(); err != nil {
			return backend.Refund{}, err
		}
		return backend.Refund{ID: "re_1", OrderID: req.OrderID, Amount: req.Amount, CreatedAt: now}, nil
	}
	args := map[string]any{"order_id": "ord_1001", "amount": "30", "reason": "Item arrived scratched", "idempotency_key": "refund-42"}
	h.call(ctx, "refund_order", args) // the client stopped listening
	if w := h.be.Writes(); len(w) != 1 {
		t.Fatalf("backend writes %v, want the one refund", w)
	}

	agent := tools.WithAgent(context.Background(), "tester")
	res := h.call(agent, "get_action_status", map[string]any{"idempotency_key": "refund-42"})
	var st tools.ActionStatus
	if sc, ok := res.StructuredContent.(tools.ActionStatus); ok {
		st = sc
	} else {
		t.Fatalf("status result %T %s, want an ActionStatus", res.StructuredContent, text(res))
	}
	if res.IsError || st.Status != storage.StatusExecuted || st.Tool != "refund_order" || st.Args["amount"] != "30.00" {
		t.Fatalf("status %+v, want the executed refund of 30.00", st)
	}
	recs := readRecords(t, h.db, storage.Filter{ActionID: st.ActionID})
	if len(recs) != 2 || recs[1].Outcome != storage.StatusExecuted {
		t.Fatalf("audit %+v, want attempt and executed outcome", recs)
	}
	// The same answer by action_id.
	if got := decode(t, h.call(agent, "get_action_status", map[string]any{"action_id": st.ActionID})); got.Error != "" {
		t.Fatalf("status by action_id: %+v", got)
	}

	// Keys are per agent: another agent's lookup finds nothing.
	other := h.call(tools.WithAgent(context.Background(), "other"), "get_action_status", map[string]any{"idempotency_key": "refund-42"})
	if got := decode(t, other); got.Error != mandate.ENOTFOUND || strings.Contains(text(other), st.ActionID) {
		t.Fatalf("another agent's lookup: %+v, want not_found without the action", got)
	}
	// Exactly one of the two.
	for _, bad := range []map[string]any{{}, {"action_id": st.ActionID, "idempotency_key": "refund-42"}, {"idempotency_key": " "}} {
		if got := decode(t, h.call(agent, "get_action_status", bad)); got.Error != mandate.EINVALID {
			t.Fatalf("get_action_status(%v): %+v, want invalid", bad, got)
		}
	}
}

// TestCancelRacingTheRecord: cancels that race the recording of the
// attempt (in the same batch of the group-commit writer as other calls)
// leave every call wholly before the commit point (nothing recorded,
// nothing done) or wholly after it (recorded, done, outcome recorded).
func TestCancelRacingTheRecord(t *testing.T) {
	t.Parallel()
	const n = 24
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	var wg sync.WaitGroup
	answers := make([]outcome, n)
	for i := range n {
		ctx, cancel := context.WithCancel(tools.WithAgent(context.Background(), "tester"))
		wg.Go(func() {
			defer cancel()
			res := h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1002", "amount": "1.00", "reason": "Goodwill",
				"idempotency_key": fmt.Sprintf("race-%d", i)})
			answers[i] = decode(t, res)
		})
		if i%2 == 0 {
			wg.Go(cancel)
		}
	}
	wg.Wait()
	agent := tools.WithAgent(context.Background(), "tester")
	recorded := 0
	keys := h.be.Keys()
	for i := range n {
		got := decode(t, h.call(agent, "get_action_status", map[string]any{"idempotency_key": fmt.Sprintf("race-%d", i)}))
		switch {
		case got.Error == mandate.ENOTFOUND:
			if answers[i].Error != mandate.EUNAVAILABLE {
				t.Fatalf("race-%d: not recorded, but the call answered %+v", i, answers[i])
			}
		case got.Error == "" && got.Status == storage.StatusExecuted:
			if answers[i].ActionID != got.ActionID || answers[i].Status != storage.StatusExecuted {
				t.Fatalf("race-%d: recorded as %s, but the call answered %+v", i, got.ActionID, answers[i])
			}
			recorded++
			found := false
			for _, k := range keys {
				found = found || k == got.ActionID
			}
			if !found {
				t.Fatalf("race-%d: recorded as executed (%s) but the backend never acted", i, got.ActionID)
			}
		default:
			t.Fatalf("race-%d: %+v, want not_found or executed", i, got)
		}
	}
	if len(keys) != recorded {
		t.Fatalf("backend acted %d times, %d actions recorded", len(keys), recorded)
	}
	if recs := readRecords(t, h.db, storage.Filter{Tool: "refund_order"}); len(recs) != 2*recorded {
		t.Fatalf("%d refund records, want attempt and outcome for each of %d", len(recs), recorded)
	}
	if recorded < n/2 {
		t.Fatalf("%d of %d calls recorded; the ones never cancelled must all be", recorded, n)
	}
}
