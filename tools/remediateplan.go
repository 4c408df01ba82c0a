package tools

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// RemediateTool names the audit record of a remediation run's plan: who
// ran `mandate remediate --apply`, for which agent, window and customer,
// and which actions the plan listed to revert, skipped and not reversible.
// It is written before the first revert, so the trail shows the plan, then
// each revert (linked to it by the reverted action's id), and who ran them.
const RemediateTool = "remediate"

// OutcomePlanned is the outcome of a plan record.
const OutcomePlanned = "planned"

// RecordPlan appends p, about to be applied by the person by, to the audit
// trail. It holds action ids only, never the values (each revert's own
// records hold before and after, masked by --redact like any change) nor
// the reasons for skipping (which may quote a value). A dry run records
// nothing: it changes nothing and may be run by anyone with the database.
// If the record cannot be written, nothing must be applied (fail closed).
func RecordPlan(ctx context.Context, d *Deps, by string, p *Plan, customer string) error {
	d = withDefaults(d)
	ids := func(items []PlanItem) []string {
		out := make([]string, 0, len(items))
		for _, it := range items {
			out = append(out, it.ActionID)
		}
		return out
	}
	args, err := json.Marshal(map[string]any{
		"agent": p.Agent, "since": p.Since.UTC().Format(time.RFC3339), "customer": customer,
		"revert": ids(p.Revert), "skipped": ids(p.Skipped), "not_reversible": ids(p.NotReversible),
	})
	if err != nil {
		return err
	}
	return d.DB.Append(ctx, &storage.Record{
		Agent: by, Tool: RemediateTool, Args: args,
		Decision: policy.Allow, Rule: "remediation plan: each revert is decided on its own by revert_update_account",
		PolicyVersion: d.Policy.Policy().Version, Phase: storage.PhaseAttempt, Outcome: OutcomePlanned, Approver: by,
	})
}
