package tools_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/tools"
)

// refusingPayments is a payment system that can never refund ord_1001
// (like Stripe for an order without a payment reference).
type refusingPayments struct{ *fakeBackend }

func (refusingPayments) CheckRefundable(o backend.Order) error {
	if o.ID == "ord_1001" {
		return mandate.Errorf(mandate.ECONFLICT, "order %s has no payment reference (payment_ref)", o.ID)
	}
	return nil
}

// TestRefundRefusedWhenThePaymentSystemCannotMakeIt: a refund the payment
// system could never make is denied when decided (audited, nothing sent),
// not queued for a person to approve and then fail.
func TestRefundRefusedWhenThePaymentSystemCannotMakeIt(t *testing.T) {
	h := newHarness(t, shippedPolicy(t), nil)
	h.deps.Backend.Payments = refusingPayments{h.be}
	ctx := tools.WithAgent(context.Background(), "demo-agent")
	for _, amount := range []string{"10.00", "120.00"} { // would be allowed, would wait for a person
		o := decode(t, h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1001", "amount": amount, "reason": "check"}))
		if o.Decision != policy.Deny || !strings.Contains(o.Message, "payment reference") {
			t.Fatalf("refund of %s: %+v, want a deny naming the missing payment reference", amount, o)
		}
	}
	checkNoWrites(t, "refund_order", h.be)
	if o := decode(t, h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1002", "amount": "10.00", "reason": "check"})); o.Decision != policy.Allow {
		t.Fatalf("a refundable order: %+v, want allow", o)
	}
}
