package tools

import (
	"context"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

type cancelArgs struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`

	customerID, currency string // set by load; currency is the base currency usage is counted in
}

func (a *cancelArgs) validate() error {
	if err := required("order_id", a.OrderID, 100); err != nil {
		return err
	}
	return required("reason", a.Reason, maxText)
}

func cancelOrder() entry {
	return spec[cancelArgs]{
		tool: mcp.NewTool("cancel_order", options(actionHints(),
			mcp.WithTitleAnnotation("Cancel an order"),
			mcp.WithDescription("Cancel an order that has not shipped yet (status pending or processing). Cancelling does not refund: use refund_order for money. "+
				"The operator's rules decide: \"allow\" means it was cancelled; \"require_approval\" means a person must approve it (give the customer the action_id); \"deny\" means it was refused, e.g. because the order has shipped. Send an idempotency_key: a retry with it can never act twice, and after a timeout or a cancelled call get_action_status(idempotency_key=...) tells you what happened."),
			mcp.WithString("order_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The order to cancel, e.g. \"ord_1004\".")),
			mcp.WithString("reason", mcp.Required(), mcp.MaxLength(maxText), mcp.Description("Why the order is being cancelled, in a sentence.")),
			idempotencyKeyArg(),
			mcp.WithOutputSchema[ActionResult](),
		)...),
		load: func(ctx context.Context, d *Deps, a *cancelArgs) (map[string]any, error) {
			o, err := d.Backend.Orders.Order(ctx, a.OrderID)
			if err != nil {
				return nil, err
			}
			c, err := d.Backend.Customers.Customer(ctx, o.CustomerID)
			if err != nil {
				return nil, err
			}
			attrs := orderFacts(d.Now(), o, c)
			t := d.Rates.Table()
			if err := baseFacts(t, attrs, o); err != nil {
				return nil, err
			}
			// Usage is counted in the base currency, whatever the order's.
			a.customerID, a.currency = c.ID, t.Base
			return attrs, nil
		},
		describe: func(a *cancelArgs) string { return "cancellation of order " + a.OrderID },
		run: func(ctx context.Context, d *Deps, a *cancelArgs, key string) (any, error) {
			o, err := d.Backend.Orders.CancelOrder(ctx, backend.CancelRequest{OrderID: a.OrderID, Reason: a.Reason, IdempotencyKey: key})
			if err != nil {
				return nil, err
			}
			return orderView(o), nil
		},
		reconcile: func(ctx context.Context, d *Deps, act *storage.Action) (any, error) {
			o, err := d.Backend.Orders.CancellationByKey(ctx, act.ID)
			if err != nil {
				return nil, err
			}
			return orderView(o), nil
		},
	}
}
