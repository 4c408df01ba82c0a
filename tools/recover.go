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
	// Resumed counts approved actions whose server stopped before it could
	// claim them, now carried out.
	Resumed int
}

// Recover reconciles actions left "executing" by a process that stopped
// between calling the backend and recording the outcome. For each one idle
// for longer than grace (so a live process's in-flight call is left alone;
// grace must exceed the backend timeout), it asks the backend whether the
// action's idempotency key was used, and records an outcome saying what
// happened. Nothing is retried: an action that did not happen is recorded
// as failed, and the agent can ask again.
func Recover(ctx context.Context, d *Deps, grace time.Duration) (RecoverReport, error) {
	d = withDefaults(d)
	var rep RecoverReport
	stale, err := d.DB.ActionsWithStatus(ctx, storage.StatusExecuting, 1000)
	if err != nil {
		return rep, err
	}
	if err := d.DB.PruneCounters(ctx); err != nil {
		return rep, err
	}
	cutoff := d.Now().Add(-grace)
	for _, act := range stale {
		if act.UpdatedAt.After(cutoff) {
			continue
		}
		e, ok := lookup(act.Tool)
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
	// A person approved these, but the server stopped between recording the
	// approval and claiming the action, so the backend was never called:
	// carrying them out now completes the approval, it retries nothing.
	approved, err := d.DB.ActionsWithStatus(ctx, storage.StatusApproved, 1000)
	if err != nil {
		return rep, err
	}
	for _, act := range approved {
		if act.UpdatedAt.After(cutoff) {
			continue
		}
		e, ok := lookup(act.Tool)
		if !ok {
			rep.Unknown++
			continue
		}
		if err := e.resume(ctx, d, act); err != nil {
			if mandate.ErrorCode(err) != mandate.ECONFLICT { // a conflict: another server claimed it
				d.Logger.Warn("could not resume approved action", "action_id", act.ID, "err", err)
				rep.Unknown++
			}
			continue
		}
		rep.Resumed++
	}
	return rep, nil
}

// resume claims an approved action and carries it out through the guard's
// execute path, with the facts read afresh.
func (s spec[A]) resume(ctx context.Context, d *Deps, act *storage.Action) error {
	a, err := s.bindStored(act, mandate.EINVALID)
	if err != nil {
		return err
	}
	if s.load != nil {
		if _, err := s.load(ctx, d, &a); err != nil {
			return err
		}
	}
	claimed, err := d.DB.ClaimApproved(ctx, act.ID)
	if err != nil {
		return err
	}
	execute(ctx, d, s, &a, claimed, d.Logger.With("action_id", act.ID, "tool", act.Tool, "agent", act.Agent))
	return nil
}
