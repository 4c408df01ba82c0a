package tools

import (
	"context"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

// checkTrail refuses to approve an action whose row disagrees with its
// audit records (storage.CheckAction): an approval executes the row's
// arguments, and the row is not chained, so a writer of the actions table
// (on PostgreSQL, anyone holding the application role's password) could
// otherwise turn a pending 150.00 refund into 1500.00, args_digest and all,
// and have a person approve it under the chained trail's 150.00 request.
// Denying stays possible: it carries nothing out. If the check cannot be
// made the approval fails closed and the action stays pending.
func checkTrail(ctx context.Context, d *Deps, act *storage.Action) error {
	ds, err := d.DB.CheckAction(ctx, act.ID)
	if err != nil {
		return mandate.Errorf(mandate.EUNAVAILABLE, "action %s could not be checked against its audit trail (%s); try again", act.ID, mandate.ErrorMessage(err))
	}
	if len(ds) == 0 {
		return nil
	}
	fields := make([]string, len(ds))
	for i, x := range ds {
		fields[i] = x.Field
	}
	return mandate.Errorf(mandate.ECONFLICT, "action %s: its stored %s disagree with its audit trail, so it cannot be approved (mandate audit verify shows the difference); deny it", act.ID, strings.Join(fields, ", "))
}
