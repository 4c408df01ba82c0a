package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"
)

type emailArgs struct {
	Email string `json:"email"`
}

func (a *emailArgs) validate() error { return required("email", a.Email, 320) }

func findCustomer() entry {
	return spec[emailArgs]{
		tool: mcp.NewTool("find_customer", options(readHints(),
			mcp.WithTitleAnnotation("Find a customer by email"),
			mcp.WithDescription("Find a customer account by its email address (case-insensitive exact match). Returns the same details as get_customer, or a not_found error."),
			mcp.WithString("email", mcp.Required(), mcp.MaxLength(320), mcp.Description("The customer's email address, e.g. \"ada@example.com\".")),
			mcp.WithOutputSchema[CustomerView](),
		)...),
		describe: func(a *emailArgs) string { return "customer search by email" },
		run: func(ctx context.Context, d *Deps, a *emailArgs, _ string) (any, error) {
			c, err := d.Backend.Customers.CustomerByEmail(ctx, a.Email)
			if err != nil {
				return nil, err
			}
			return customerView(c), nil
		},
	}
}
