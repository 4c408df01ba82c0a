package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"
)

type orderIDArgs struct {
	OrderID string `json:"order_id"`
}

func (a *orderIDArgs) validate() error { return required("order_id", a.OrderID, 100) }

func getOrder() entry {
	return spec[orderIDArgs]{
		tool: mcp.NewTool("get_order", options(readHints(),
			mcp.WithTitleAnnotation("Look up an order"),
			mcp.WithDescription("Look up an order by id: its customer, status (pending, processing, shipped, delivered, cancelled), currency, total paid, amount refunded so far and amount still refundable. Money is a decimal string in the order's currency, e.g. \"30.00\". Use it before refunding or cancelling to see what is possible."),
			mcp.WithString("order_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The order id, e.g. \"ord_1001\".")),
			mcp.WithOutputSchema[OrderView](),
		)...),
		describe: func(a *orderIDArgs) string { return "lookup of order " + a.OrderID },
		run: func(ctx context.Context, d *Deps, a *orderIDArgs, _ string) (any, error) {
			o, err := d.Backend.Orders.Order(ctx, a.OrderID)
			if err != nil {
				return nil, err
			}
			return orderView(o), nil
		},
	}
}
