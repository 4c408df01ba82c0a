package tools

import (
	"context"
	"slices"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mark3labs/mcp-go/mcp"
)

type updateArgs struct {
	CustomerID string `json:"customer_id"`
	Field      string `json:"field"`
	Value      string `json:"value"`
}

func (a *updateArgs) validate() error {
	if err := required("customer_id", a.CustomerID, 100); err != nil {
		return err
	}
	if !slices.Contains(backend.UpdatableFields, a.Field) {
		return mandate.Errorf(mandate.EINVALID, "field must be one of %s", strings.Join(backend.UpdatableFields, ", "))
	}
	return required("value", a.Value, 500)
}

func updateAccount() entry {
	return spec[updateArgs]{
		tool: mcp.NewTool("update_account", options(actionHints(),
			mcp.WithTitleAnnotation("Change a customer's account details"),
			mcp.WithDescription("Change one contact detail on a customer's account: email, phone, shipping_address or name. "+
				"The operator's rules decide: \"allow\" means it was changed; \"require_approval\" means a person must approve it first (email changes usually do; give the customer the action_id); \"deny\" means it was refused."),
			mcp.WithString("customer_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The customer whose account changes, e.g. \"cus_ada\".")),
			mcp.WithString("field", mcp.Required(), mcp.Enum(backend.UpdatableFields...), mcp.Description("Which detail to change.")),
			mcp.WithString("value", mcp.Required(), mcp.MaxLength(500), mcp.Description("The new value: an email address, a phone number such as \"+441234567890\", a full postal address, or a name.")),
			idempotencyKeyArg(),
			mcp.WithOutputSchema[ActionResult](),
		)...),
		load: func(ctx context.Context, d *Deps, a *updateArgs) (map[string]any, error) {
			c, err := d.Backend.Customers.Customer(ctx, a.CustomerID)
			if err != nil {
				return nil, err
			}
			return map[string]any{"field": a.Field, "customer_age_days": ageDays(d.Now(), c.CreatedAt)}, nil
		},
		// The new value is personal data: it stays out of messages and logs.
		describe: func(a *updateArgs) string { return "change of " + a.Field + " on customer " + a.CustomerID },
		run: func(ctx context.Context, d *Deps, a *updateArgs, key string) (any, error) {
			c, err := d.Backend.Customers.UpdateCustomer(ctx, backend.UpdateRequest{
				CustomerID: a.CustomerID, Field: a.Field, Value: a.Value, IdempotencyKey: key,
			})
			if err != nil {
				return nil, err
			}
			return customerView(c), nil
		},
		reconcile: func(ctx context.Context, d *Deps, key string) (any, error) {
			c, err := d.Backend.Customers.UpdateByKey(ctx, key)
			if err != nil {
				return nil, err
			}
			return customerView(c), nil
		},
	}
}
