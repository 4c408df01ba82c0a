package tools

import (
	"context"
	"encoding/json"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/storage"
)

// changeTracker is implemented by the arguments of every action tool: it
// reads from the system of record the values the action will change, and
// fills in what they became. The outcome record carries both
// (storage.Changes), so lineage can show, and remediation can put back,
// exactly what an agent changed.
//
// "Before" is read right before the backend call, in execute, not taken
// from the facts the decision was made on: those may be hours old when a
// person approved the action, and another change may have landed since.
// "After" is what the call returned (for a refund, the order read right
// after it, since the refund itself does not carry the order's totals).
type changeTracker interface {
	// changesBefore returns the changes skeleton with before values read
	// now, or, with read false (reconciliation after a restart, when the
	// moment before is gone), with before unknown.
	changesBefore(ctx context.Context, d *Deps, read bool) (*storage.Changes, error)
	// changesAfter fills in the after values from out, the result the
	// backend returned (run or reconcile).
	changesAfter(ctx context.Context, d *Deps, c *storage.Changes, out any)
}

// readBefore reads the values the action a will change, bounded by the
// backend timeout. An action whose values cannot be read is not carried
// out: the error (code unavailable unless the system of record said
// otherwise) becomes its failed outcome, and nothing was changed. An
// action that changed something it cannot say the previous value of could
// never be checked or put back.
func readBefore[A any](ctx context.Context, d *Deps, a *A) (*storage.Changes, error) {
	ct, ok := any(a).(changeTracker)
	if !ok {
		return nil, nil
	}
	bctx, cancel := context.WithTimeout(ctx, d.BackendTimeout)
	defer cancel()
	c, err := ct.changesBefore(bctx, d, true)
	if err != nil {
		if mandate.ErrorCode(err) == "" || mandate.ErrorCode(err) == mandate.EINTERNAL {
			err = mandate.Errorf(mandate.EUNAVAILABLE, "the current values could not be read from the system of record before acting")
		}
		return nil, err
	}
	return c, nil
}

// changesAfter completes c with what the action's result out says, and
// encodes it for the outcome record; nil when the tool tracks nothing.
func changesAfter[A any](ctx context.Context, d *Deps, a *A, c *storage.Changes, out any) json.RawMessage {
	ct, ok := any(a).(changeTracker)
	if !ok || c == nil {
		return nil
	}
	bctx, cancel := context.WithTimeout(ctx, d.BackendTimeout)
	defer cancel()
	ct.changesAfter(bctx, d, c, out)
	return c.Encode()
}

// reconciledChanges is the changes of an action whose outcome Recover
// found in the system of record after a restart: before is unknown, after
// is the result found, and the note says so.
func reconciledChanges(ctx context.Context, d *Deps, act *storage.Action, out any) json.RawMessage {
	var ct changeTracker
	switch act.Tool {
	case "update_account":
		ct = &updateArgs{}
	case "refund_order":
		ct = &refundArgs{}
	case "cancel_order":
		ct = &cancelArgs{}
	default:
		return nil
	}
	if json.Unmarshal(act.Args, ct) != nil {
		return nil
	}
	c, _ := ct.changesBefore(ctx, d, false)
	if c.CustomerID == "" {
		c.CustomerID = act.CustomerID
	}
	c.Source = storage.ChangesReconciled
	c.Note = "recorded after a restart: the values before the action were not read, so they are unknown; after is what the system of record showed when it was reconciled"
	bctx, cancel := context.WithTimeout(ctx, d.BackendTimeout)
	defer cancel()
	ct.changesAfter(bctx, d, c, out)
	return c.Encode()
}

// addNote appends a sentence to c's note.
func addNote(c *storage.Changes, s string) {
	if c.Note != "" {
		c.Note += "; "
	}
	c.Note += s
}

func (a *updateArgs) changesBefore(ctx context.Context, d *Deps, read bool) (*storage.Changes, error) {
	c := &storage.Changes{Tool: "update_account", CustomerID: a.CustomerID, Source: storage.ChangesReadBeforeCall,
		Fields: []storage.FieldChange{{Field: a.Field, Before: storage.TextValue("", false)}}}
	if !read {
		return c, nil
	}
	cust, err := d.Backend.Customers.Customer(ctx, a.CustomerID)
	if err != nil {
		return nil, err
	}
	v, ok := cust.Field(a.Field)
	c.Fields[0].Before = storage.TextValue(v, ok)
	return c, nil
}

func (a *updateArgs) changesAfter(_ context.Context, _ *Deps, c *storage.Changes, out any) {
	cv, ok := out.(CustomerView)
	v, known := "", false
	if ok {
		v, known = backend.Customer{Name: cv.Name, Email: cv.Email, Phone: cv.Phone, ShippingAddress: cv.ShippingAddress}.Field(a.Field)
	}
	c.Fields[0].After = storage.TextValue(v, known)
	if !known {
		addNote(c, "the value after was not in the system of record's answer")
	}
}

func (a *refundArgs) changesBefore(ctx context.Context, d *Deps, read bool) (*storage.Changes, error) {
	c := &storage.Changes{Tool: "refund_order", OrderID: a.OrderID, CustomerID: a.customerID, Source: storage.ChangesReadBeforeCall,
		Fields: []storage.FieldChange{
			{Field: "refunded", Before: storage.MoneyValue(mandate.Money{}, false)},
			{Field: "refundable", Before: storage.MoneyValue(mandate.Money{}, false)},
		}}
	if !read {
		return c, nil
	}
	if rr, ok := d.Backend.Payments.(backend.RefundReporter); ok && rr.ReportsRefundOrder() {
		c.Source = storage.ChangesReported // before and after come from the refund's answer
		return c, nil
	}
	o, err := d.Backend.Orders.Order(ctx, a.OrderID)
	if err != nil {
		return nil, err
	}
	c.CustomerID = o.CustomerID
	c.Fields[0].Before = storage.MoneyValue(o.Refunded, true)
	c.Fields[1].Before = storage.MoneyValue(o.Refundable(), true)
	return c, nil
}

func (a *refundArgs) changesAfter(ctx context.Context, d *Deps, c *storage.Changes, out any) {
	if r, ok := out.(RefundView); ok {
		c.RefundID = r.RefundID
	}
	c.Fields[0].After = storage.MoneyValue(mandate.Money{}, false)
	c.Fields[1].After = storage.MoneyValue(mandate.Money{}, false)
	if c.Source == storage.ChangesReported {
		if o := a.reported; o != nil && o.ID == a.OrderID && o.Refunded.Currency == a.amount.Currency {
			if c.CustomerID == "" {
				c.CustomerID = o.CustomerID
			}
			before := mandate.Money{Minor: o.Refunded.Minor - a.amount.Minor, Currency: o.Refunded.Currency}
			left := o.Refundable()
			c.Fields[0].Before = storage.MoneyValue(before, true)
			c.Fields[1].Before = storage.MoneyValue(mandate.Money{Minor: left.Minor + a.amount.Minor, Currency: left.Currency}, true)
			c.Fields[0].After = storage.MoneyValue(o.Refunded, true)
			c.Fields[1].After = storage.MoneyValue(left, true)
			return
		}
		// Not said after all (a repeat by key): before is unknown, and
		// after is read as for any other system of record.
		addNote(c, "the system of record did not report the order with the refund, so its totals before are unknown")
	}
	o, err := d.Backend.Orders.Order(ctx, a.OrderID)
	if err != nil {
		addNote(c, "the order could not be read after the refund, so its totals after are unknown")
		return
	}
	if c.CustomerID == "" {
		c.CustomerID = o.CustomerID
	}
	c.Fields[0].After = storage.MoneyValue(o.Refunded, true)
	c.Fields[1].After = storage.MoneyValue(o.Refundable(), true)
}

func (a *cancelArgs) changesBefore(ctx context.Context, d *Deps, read bool) (*storage.Changes, error) {
	c := &storage.Changes{Tool: "cancel_order", OrderID: a.OrderID, CustomerID: a.customerID, Source: storage.ChangesReadBeforeCall,
		Fields: []storage.FieldChange{{Field: "status", Before: storage.TextValue("", false)}}}
	if !read {
		return c, nil
	}
	o, err := d.Backend.Orders.Order(ctx, a.OrderID)
	if err != nil {
		return nil, err
	}
	c.CustomerID = o.CustomerID
	c.Fields[0].Before = storage.TextValue(o.Status, true)
	return c, nil
}

func (a *cancelArgs) changesAfter(_ context.Context, _ *Deps, c *storage.Changes, out any) {
	ov, ok := out.(OrderView)
	c.Fields[0].After = storage.TextValue(ov.Status, ok)
	if ok && c.CustomerID == "" {
		c.CustomerID = ov.CustomerID
	}
	if !ok {
		addNote(c, "the status after was not in the system of record's answer")
	}
}
