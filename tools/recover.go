package tools

import (
	"context"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

// RecoverReport says what Recover found.
type RecoverReport struct {
	Executed, NotExecuted, Unknown int
}

// Recover reconciles actions left "executing" by a process that stopped
// between calling the backend and recording the outcome. For each one idle
// for longer than grace (so a live process's in-flight call is left alone;
// grace must exceed the backend timeout), it asks the backend whether the
// action's idempotency key was used, and records an outcome saying what
// happened. Nothing is retried: an action that did not happen is recorded
// as failed, and the agent can ask again.
func Recover(ctx context.Context, d *Deps, grace time.Duration) (RecoverReport, error) {
	var rep RecoverReport
	stale, err := d.DB.ActionsWithStatus(ctx, storage.StatusExecuting, 1000)
	if err != nil {
		return rep, err
	}
	byName := map[string]entry{}
	for _, e := range all() {
		byName[e.name()] = e
	}
	cutoff := d.Now().Add(-grace)
	for _, act := range stale {
		if act.UpdatedAt.After(cutoff) {
			continue
		}
		e, ok := byName[act.Tool]
		if !ok || e.reconciler() == nil {
			rep.Unknown++
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, d.BackendTimeout)
		out, err := e.reconciler()(bctx, d, act.ID)
		cancel()
		rec := &storage.Record{Agent: act.Agent, Tool: act.Tool, Args: act.Args, Decision: act.Decision,
			Rule: act.Rule, PolicyVersion: act.PolicyVersion}
		switch mandate.ErrorCode(err) {
		case "":
			act.Status, act.Result, act.Error = storage.StatusExecuted, canonical(out), ""
			rec.Outcome, rec.Error = storage.StatusExecuted, "reconciled after a restart: the system of record shows it was done"
			rep.Executed++
		case mandate.ENOTFOUND:
			act.Status, act.Error = storage.StatusFailed, "not done: the server stopped before the system of record acted; nothing was retried"
			rec.Outcome, rec.Error = storage.StatusFailed, "reconciled after a restart: "+act.Error
			rep.NotExecuted++
		default:
			// The backend cannot tell us now; leave it for the next pass.
			d.Logger.Warn("could not reconcile action", "action_id", act.ID, "err", err)
			rep.Unknown++
			continue
		}
		if err := d.DB.RecordOutcome(ctx, act, rec); err != nil && mandate.ErrorCode(err) != mandate.ECONFLICT {
			return rep, err
		}
		d.Logger.Info("reconciled action", "action_id", act.ID, "tool", act.Tool, "status", act.Status)
	}
	return rep, nil
}
