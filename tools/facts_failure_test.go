package tools_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/tools"
)

// flakyOrders fails the first n reads with unavailable, then answers.
type flakyOrders struct {
	*fakeBackend
	fails atomic.Int64
}

func (f *flakyOrders) Order(ctx context.Context, id string) (backend.Order, error) {
	if f.fails.Add(-1) >= 0 {
		return backend.Order{}, mandate.Errorf(mandate.EUNAVAILABLE, "orders system timed out")
	}
	return f.fakeBackend.Order(ctx, id)
}

// TestTransientFactFailureKeepsTheKeyFree: the system of record is briefly
// unavailable while the facts are read, and the agent is told "Nothing was
// changed; try again later". The retry with the same idempotency key acts
// (it used to be answered "already refused by the rules" for ever).
func TestTransientFactFailureKeepsTheKeyFree(t *testing.T) {
	h := newHarness(t, shippedPolicy(t), nil)
	fo := &flakyOrders{fakeBackend: h.be}
	fo.fails.Store(1)
	h.deps.Backend.Orders = fo
	ctx := tools.WithAgent(context.Background(), "demo-agent")
	args := map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched", "idempotency_key": "k-1"}

	first := decode(t, h.call(ctx, "refund_order", args))
	if first.Error != mandate.EUNAVAILABLE || len(h.be.Writes()) != 0 {
		t.Fatalf("during the outage: error %q, %d writes; want unavailable and none", first.Error, len(h.be.Writes()))
	}
	second := decode(t, h.call(ctx, "refund_order", args))
	if second.Status != "executed" || len(h.be.Writes()) != 1 {
		t.Fatalf("the retry with the same key after the outage: status %q, %q, %d writes; want it executed once", second.Status, second.Message, len(h.be.Writes()))
	}
	third := decode(t, h.call(ctx, "refund_order", args))
	if third.ActionID != second.ActionID || len(h.be.Writes()) != 1 {
		t.Fatalf("a third call with the key: action %s, %d writes; want the second's answer, no new write", third.ActionID, len(h.be.Writes()))
	}
}

// thbOrders answers ord_1001 as an order in Thai baht, a currency the
// payment system uses but Mandate's currency table does not list.
type thbOrders struct{ *fakeBackend }

func (f thbOrders) Order(ctx context.Context, id string) (backend.Order, error) {
	o, err := f.fakeBackend.Order(ctx, id)
	o.Total.Currency, o.Refunded.Currency = "THB", "THB"
	return o, err
}

// TestUnknownOrderCurrencyIsAuditedRefusal: a refund on an order whose
// currency Mandate does not know is a refusal, audited, not the agent's
// bad input (it sent no currency): it used to be "invalid" with no record.
func TestUnknownOrderCurrencyIsAuditedRefusal(t *testing.T) {
	h := newHarness(t, shippedPolicy(t), nil)
	h.deps.Backend.Orders = thbOrders{h.be}
	ctx := tools.WithAgent(context.Background(), "demo-agent")
	ref := decode(t, h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched"}))
	if ref.Error != mandate.EDENIED || ref.ActionID == "" || !strings.Contains(ref.Message, "THB") || len(h.be.Writes()) != 0 {
		t.Fatalf("refund on a THB order: error %q, action %q, %q, %d writes; want an audited refusal naming THB", ref.Error, ref.ActionID, ref.Message, len(h.be.Writes()))
	}
	if n := len(h.records()); n != 1 {
		t.Fatalf("%d audit records for the refused refund, want 1", n)
	}
}

// syncBuf is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogsCarryNoAgentValues: an agent that sends an email where an id or
// an amount belongs (common) gets it back in its error, and the audit
// record keeps it; the server's log does not (logs carry no personal
// data; a review found it in three log lines).
func TestLogsCarryNoAgentValues(t *testing.T) {
	const email = "grace.hopper@example.com"
	h := newHarness(t, shippedPolicy(t), nil)
	var logged syncBuf
	h.deps.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := tools.WithAgent(context.Background(), "demo-agent")
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"refund_order", map[string]any{"order_id": "ord_1001", "amount": "abc " + email, "reason": "r"}},
		{"refund_order", map[string]any{"order_id": "ord_1001", "amount": "1.00", "reason": "r", email: "x"}},
		{"refund_order", map[string]any{"order_id": email, "amount": "1.00", "reason": "r"}},
		{"get_order", map[string]any{"order_id": email}},
	} {
		res := h.call(ctx, c.tool, c.args)
		if !res.IsError {
			t.Fatalf("%s %v: not refused", c.tool, c.args)
		}
	}
	if strings.Contains(logged.String(), email) {
		t.Fatalf("the log repeats what the agent sent:\n%s", logged.String())
	}
	if !strings.Contains(logged.String(), "invalid arguments") || !strings.Contains(logged.String(), "denied") {
		t.Fatalf("the log lacks the refusals themselves:\n%s", logged.String())
	}
}

// TestNoOracleForAToolNeverAllowed: an agent no rule could ever let use
// update_account gets the same refusal whether the customer exists or not,
// and the system of record is not asked on its behalf (a review saw
// not_found for an unknown id and "the rules do not allow it" for a real
// one: an oracle of which customers exist).
func TestNoOracleForAToolNeverAllowed(t *testing.T) {
	pol := policyFrom(t, string(mandate.DefaultPolicy)+"\ng, lookup-bot, lookup_role\np, lookup_role, get_order, true, allow\n")
	h := newHarness(t, pol, nil)
	ctx := tools.WithAgent(context.Background(), "lookup-bot")
	var answers []string
	for _, id := range []string{"cus_nope", "cus_ada"} {
		res := h.call(ctx, "update_account", map[string]any{"customer_id": id, "field": "phone", "value": "+441234567890", "reason": "x"})
		out := decode(t, res)
		if !res.IsError || out.Decision != "deny" || out.Error != "" {
			t.Fatalf("update_account of %s by lookup-bot: isError %v, %+v; want a plain refusal by the rules", id, res.IsError, out)
		}
		answers = append(answers, strings.ReplaceAll(out.Message, id, "ID"))
	}
	if answers[0] != answers[1] {
		t.Fatalf("the refusals differ with the customer's existence:\n%s\n%s", answers[0], answers[1])
	}
}

// TestFailedLookupIsRecordedUnread: a get_order allowed by the rules whose
// read fails (the orders system unavailable) is in the trail as unread,
// with the reason, never as read: nothing was shown.
func TestFailedLookupIsRecordedUnread(t *testing.T) {
	h := newHarness(t, shippedPolicy(t), nil)
	fo := &flakyOrders{fakeBackend: h.be}
	fo.fails.Store(1)
	h.deps.Backend.Orders = fo
	ctx := tools.WithAgent(context.Background(), "demo-agent")
	got := decode(t, h.call(ctx, "get_order", map[string]any{"order_id": "ord_1001"}))
	if got.Error != mandate.EUNAVAILABLE {
		t.Fatalf("get_order during the outage: error %q, want unavailable", got.Error)
	}
	h.deps.DB.Settle(ctx)
	recs := h.records()
	if len(recs) != 1 || recs[0].Tool != "get_order" || recs[0].Outcome != "unread" || recs[0].Error != mandate.EUNAVAILABLE {
		t.Fatalf("records of the failed lookup: %+v; want one get_order record, outcome unread, error unavailable", recs)
	}
}
