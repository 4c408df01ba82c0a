package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"
)

type customerIDArgs struct {
	CustomerID string `json:"customer_id"`
}

func (a *customerIDArgs) validate() error { return required("customer_id", a.CustomerID, 100) }

func getCustomer() entry {
	return spec[customerIDArgs]{
		tool: mcp.NewTool("get_customer", options(readHints(),
			mcp.WithTitleAnnotation("Look up a customer"),
			mcp.WithDescription("Look up a customer account by id: name, email, phone, shipping address and when the account was created. The details are personal data: use them only to help this customer."),
			mcp.WithString("customer_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The customer id, e.g. \"cus_ada\".")),
			mcp.WithOutputSchema[CustomerView](),
		)...),
		describe: func(a *customerIDArgs) string { return "lookup of customer " + a.CustomerID },
		run: func(ctx context.Context, d *Deps, a *customerIDArgs, _ string) (any, error) {
			c, err := d.Backend.Customers.Customer(ctx, a.CustomerID)
			if err != nil {
				return nil, err
			}
			return customerView(c), nil
		},
	}
}
