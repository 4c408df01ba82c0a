package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/storage"
)

// A person's revert must never overwrite a value set after the change it
// reverts: checked when read just before sending (revertStillDue), and by
// the system of record at the write itself, through the precondition the
// revert carries (backend.UpdateRequest.Expected).

// revertStillDue is checked right before a person's revert is sent, with
// c the values read just then: the field must still hold the value the
// reverted change set. Someone may have changed it since the plan was made
// or while the revert waited for approval, and putting the earlier value
// back would overwrite theirs; such a revert is not sent (changedSince).
// The read and the write are two steps, so the value is also sent as the
// revert's precondition (backend.UpdateRequest.Expected): the system of
// record refuses the write if the customer changed the field in between.
// Anything but a revert passes, with no precondition.
func revertStillDue(ctx context.Context, d *Deps, act *storage.Action, c *storage.Changes, args any) error {
	if decidedAs(act) == act.Tool {
		return nil
	}
	id := revertedID(act.IdempotencyKey)
	p, ok := args.(preconditioned)
	if !ok {
		return mandate.Errorf(mandate.EINVALID, "the revert of %s cannot carry the value it expects, so it was not sent", id)
	}
	if c == nil || len(c.Fields) != 1 {
		return mandate.Errorf(mandate.EUNAVAILABLE, "the current value could not be read before reverting %s", id)
	}
	field := c.Fields[0].Field
	cur, known := storage.ChangeText(c.Fields[0].Before)
	orig, err := d.DB.Action(ctx, id)
	if err != nil {
		return mandate.Errorf(mandate.EUNAVAILABLE, "the reverted action %s could not be read: %s", id, mandate.ErrorMessage(err))
	}
	set, ok := valueSetBy(orig, field)
	if !known || !ok {
		return mandate.Errorf(mandate.ECONFLICT, "the %s that %s set, or the current one, is not known, so putting the earlier value back could overwrite a newer one", fieldLabel(field), id)
	}
	if cur != set {
		return changedSince(field, id)
	}
	p.expect(set)
	return nil
}

// preconditioned is implemented by the arguments of a tool a revert calls
// (update_account's): expect makes its call carry the value the field must
// still hold.
type preconditioned interface{ expect(v string) }

// RevertChangedSince begins the recorded error of a revert that was not
// made because the field no longer held what the reverted change set:
// found when read just before, or refused by the system of record's
// precondition. ApplyRemediation reports it as skipped.
const RevertChangedSince = "not reverted, changed since"

func changedSince(field, id string) error {
	return fmt.Errorf("%w: %w", mandate.Errorf(mandate.ECONFLICT, "%s: the %s is no longer what %s set (the customer or someone else changed it since), so putting the earlier value back would overwrite a newer one",
		RevertChangedSince, fieldLabel(field), id), backend.ErrChangedSince)
}

// revertRefused is err, the outcome of sending a person's revert, worded
// as changedSince when the system of record refused it by its
// precondition, so the trail and remediation say so.
func revertRefused(act *storage.Action, c *storage.Changes, err error) error {
	if err == nil || !errors.Is(err, backend.ErrChangedSince) || decidedAs(act) == act.Tool || c == nil || len(c.Fields) != 1 {
		return err
	}
	return changedSince(c.Fields[0].Field, revertedID(act.IdempotencyKey))
}

// valueSetBy is the value of field that the executed update_account act
// left: from its result (the customer as the system of record answered),
// else its arguments.
func valueSetBy(act *storage.Action, field string) (string, bool) {
	if act.Tool != "update_account" || act.Status != storage.StatusExecuted {
		return "", false
	}
	var cv CustomerView
	if json.Unmarshal(act.Result, &cv) == nil {
		if v, ok := (backend.Customer{Name: cv.Name, Email: cv.Email, Phone: cv.Phone, ShippingAddress: cv.ShippingAddress}).Field(field); ok && v != "" {
			return v, true
		}
	}
	var args updateArgs
	if json.Unmarshal(act.Args, &args) == nil && args.Field == field && args.Value != "" {
		return args.Value, true
	}
	return "", false
}
