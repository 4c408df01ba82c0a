package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

type refundArgs struct {
	OrderID string    `json:"order_id"`
	Amount  amountArg `json:"amount"`
	Reason  string    `json:"reason"`

	amount     mandate.Money  // Amount in the order's currency, set by load
	base       mandate.Money  // amount in the base currency, set by load
	customerID string         // the order's customer, set by load
	reported   *backend.Order // the order as the refund left it, if the system of record said (run)
}

func (a *refundArgs) validate() error {
	if err := required("order_id", a.OrderID, 100); err != nil {
		return err
	}
	if err := required("amount", string(a.Amount), 40); err != nil {
		return err
	}
	if s := string(a.Amount); strings.TrimSpace(s) != s {
		// Money is refused rather than normalized: what the agent sent is
		// what is decided and audited, or nothing is.
		return mandate.Errorf(mandate.EINVALID, "amount %q has spaces at its start or end; send the decimal number alone, like \"30.00\"", s)
	}
	return required("reason", a.Reason, maxText)
}

// likeRecorded adopts the recorded amount's text when it is the same
// decimal value as the retry's: exact, by big.Rat, never float64.
func (a *refundArgs) likeRecorded(recorded json.RawMessage) {
	var r struct {
		Amount string `json:"amount"`
	}
	if json.Unmarshal(recorded, &r) != nil || r.Amount == "" {
		return
	}
	mine, ok1 := new(big.Rat).SetString(string(a.Amount))
	theirs, ok2 := new(big.Rat).SetString(r.Amount)
	if ok1 && ok2 && mine.Cmp(theirs) == 0 {
		a.Amount = amountArg(r.Amount)
	}
}

// parseAmount reads the agent's amount in the order's currency: the amount
// is always in the order's currency, so a refund in another is impossible.
func parseAmount(s amountArg, currency string) (mandate.Money, error) {
	if strings.HasPrefix(string(s), "-") {
		return mandate.Money{}, mandate.Errorf(mandate.EINVALID, "amount must be greater than zero")
	}
	m, err := mandate.ParseMoney(string(s), currency)
	if err != nil {
		return m, err
	}
	if m.Minor == 0 {
		return m, mandate.Errorf(mandate.EINVALID, "amount must be greater than zero")
	}
	return m, nil
}

func refundOrder() entry {
	return spec[refundArgs]{
		tool: mcp.NewTool("refund_order", options(actionHints(),
			mcp.WithTitleAnnotation("Refund an order"),
			mcp.WithDescription("Refund part or all of an order to the customer. The amount is in the order's own currency (see get_order) and cannot exceed what is still refundable. "+
				"The operator's rules decide: \"allow\" means the refund was made; \"require_approval\" means a person must approve it first (tell the customer it is under review and give them the action_id; check back with get_action_status); "+
				"\"deny\" means it was refused and retrying will not help. Send an idempotency_key: a retry with it can never act twice, and after a timeout or a cancelled call get_action_status(idempotency_key=...) tells you what happened."),
			mcp.WithString("order_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The order to refund, e.g. \"ord_1001\".")),
			mcp.WithString("amount", mcp.Required(), mcp.MaxLength(40), mcp.Pattern(`^[0-9]+(\.[0-9]+)?$`),
				mcp.Description("How much to refund, as a decimal string in the order's currency with at most its number of decimal places, e.g. \"30.00\" for thirty dollars on a USD order. Must be greater than zero.")),
			mcp.WithString("reason", mcp.Required(), mcp.MaxLength(maxText), mcp.Description("Why the customer is owed this refund, in a sentence. A person reviewing the request reads it.")),
			idempotencyKeyArg(),
			mcp.WithOutputSchema[ActionResult](),
		)...),
		load: func(ctx context.Context, d *Deps, a *refundArgs) (map[string]any, error) {
			o, err := d.Backend.Orders.Order(ctx, a.OrderID)
			if err != nil {
				return nil, err
			}
			if _, ok := mandate.CurrencyExponent(o.Total.Currency); !ok {
				// The system of record's currency, not the agent's input:
				// refused (and audited), not reported as a bad argument.
				return nil, mandate.Errorf(mandate.EDENIED, "order %s is in %s, a currency Mandate does not know, so its amount cannot be checked", o.ID, mandate.Visible(mandate.Truncate(o.Total.Currency, 10), false))
			}
			if a.amount, err = parseAmount(a.Amount, o.Total.Currency); err != nil {
				return nil, err
			}
			if rc, ok := d.Backend.Payments.(backend.RefundChecker); ok {
				if err := rc.CheckRefundable(o); err != nil {
					return nil, err
				}
			}
			c, err := d.Backend.Customers.Customer(ctx, o.CustomerID)
			if err != nil {
				return nil, err
			}
			a.customerID = c.ID
			attrs := orderFacts(d.Now(), o, c)
			attrs["amount"] = a.amount.Major()
			// Limits are in the base currency: with no rate for the order's
			// currency there is no limit to apply, so nothing happens.
			t := d.Rates.Table()
			if err := baseFacts(t, attrs, o); err != nil {
				return nil, err
			}
			if a.base, _, err = t.Convert(a.amount); err != nil {
				return nil, err
			}
			attrs[policy.AttrAmountBase] = a.base.Major()
			// Once every fact is read, the amount takes its canonical form
			// in the order's own currency (never the base currency limits
			// count in), the form that is audited and digested: 30 and "30"
			// are "30.00" on a USD order, "30.000" on a KWD one, "30" on a
			// JPY one. A load that fails leaves the agent's text as sent.
			a.Amount = amountArg(a.amount.String())
			return attrs, nil
		},
		describe: func(a *refundArgs) string {
			if a.amount.Currency == "" {
				return fmt.Sprintf("refund of %s on order %s", a.Amount, a.OrderID)
			}
			return fmt.Sprintf("refund of %s %s on order %s", a.amount, a.amount.Currency, a.OrderID)
		},
		run: func(ctx context.Context, d *Deps, a *refundArgs, key string) (any, error) {
			r, err := d.Backend.Payments.Refund(ctx, backend.RefundRequest{
				OrderID: a.OrderID, Amount: a.amount, Reason: a.Reason, IdempotencyKey: key, Agent: d.identity(ctx),
			})
			if err != nil {
				return nil, err
			}
			a.reported = r.Order
			return RefundView{RefundID: r.ID, OrderID: r.OrderID, Amount: r.Amount.String(), Currency: r.Amount.Currency, Created: r.CreatedAt}, nil
		},
		reconcile: func(ctx context.Context, d *Deps, act *storage.Action) (any, error) {
			r, err := refundByKey(ctx, d, act)
			if err != nil {
				return nil, err
			}
			return RefundView{RefundID: r.ID, OrderID: r.OrderID, Amount: r.Amount.String(), Currency: r.Amount.Currency, Created: r.CreatedAt}, nil
		},
	}
}

// refundByKey asks the payment system for the refund made with act's id as
// its key: among the refunds of the order act recorded when the system can
// search those (backend.RefundFinder), else by the key alone. A recorded
// refund that names no order is not known (unavailable), never the key-only
// search's not_found, which covers only recent refunds.
func refundByKey(ctx context.Context, d *Deps, act *storage.Action) (backend.Refund, error) {
	f, ok := d.Backend.Payments.(backend.RefundFinder)
	if !ok {
		return d.Backend.Payments.RefundByKey(ctx, act.ID)
	}
	var a struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal(act.Args, &a); err != nil || a.OrderID == "" {
		return backend.Refund{}, mandate.Errorf(mandate.EUNAVAILABLE, "action %s names no order to look its refund up on", act.ID)
	}
	return f.RefundByKeyOnOrder(ctx, act.ID, a.OrderID)
}
