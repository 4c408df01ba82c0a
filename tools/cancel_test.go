package tools_test

import (
	"context"
	"testing"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestCancelledCallRunsToItsEnd: closing stdin cancels the context of every
// call in flight. A started call must still read its facts, decide, record
// and act, rather than fail half-way with "unavailable".
func TestCancelledCallRunsToItsEnd(t *testing.T) {
	_, deps := limitFixture(t, 1)
	refund := handler(t, deps[0], "refund_order")
	ctx, cancel := context.WithCancel(tools.WithAgent(context.Background(), "demo-agent"))
	cancel()
	res, err := refund(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_l000", "amount": "20.00", "reason": "cancelled client"}}})
	if err != nil {
		t.Fatal(err)
	}
	out, ok := res.StructuredContent.(*tools.ActionResult)
	if !ok || res.IsError || out.Decision != policy.Allow || out.Status != storage.StatusExecuted {
		t.Fatalf("result %+v (isError %v), want an executed refund", res.StructuredContent, res.IsError)
	}
	o, err := deps[0].Backend.Orders.Order(context.Background(), "ord_l000")
	if err != nil {
		t.Fatal(err)
	}
	if o.Refunded.Minor != 2000 {
		t.Fatalf("store refunded %s, want 20.00", o.Refunded)
	}
	act, err := deps[0].DB.Action(context.Background(), out.ActionID)
	if err != nil || act.Status != storage.StatusExecuted {
		t.Fatalf("action %+v, %v: want its outcome recorded as executed", act, err)
	}
}
