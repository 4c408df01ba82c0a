package tools

import (
	"context"
	"errors"
	"fmt"
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
	// Refused counts approved actions the live policy now refuses: they
	// were denied, not carried out.
	Refused int
	// Stale counts approved actions left alone because this process does
	// not hold the live policy, or the live exchange rates.
	Stale int
	// Untrusted counts approved actions left alone because their row
	// disagrees with its digest or its audit trail (no approval recorded,
	// arguments rewritten): refused and audited once, and logged on every
	// pass while the row stays so.
	Untrusted int
}

// Recover reconciles actions left "executing" by a process that stopped
// between calling the backend and recording the outcome, or by a call whose
// backend did not confirm it in time (execute). For each one idle for
// longer than grace (so a live process's calls are over: grace must exceed
// execute's budget, twice the backend timeout), it asks the backend whether
// the action's idempotency key was used, and records an outcome saying what
// happened. A backend still carrying out a change with the key says so
// (the contract's 409 on GET /operations/{key}), which leaves the action
// for the next pass; so does "nothing was done" asked before the action's
// requests are past their deadline and the clock-skew margin
// (notDoneTrusted), whatever grace says. Nothing is retried: an action that did not happen is
// recorded as failed, and the agent can ask again.
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
		out, err := e.reconciler()(bctx, d, act)
		cancel()
		rec := &storage.Record{Agent: act.Agent, Tool: act.Tool, Args: act.Args, Decision: act.Decision,
			Rule: act.Rule, PolicyVersion: act.PolicyVersion}
		switch mandate.ErrorCode(err) {
		case "":
			act.Status, act.Result, act.Error = storage.StatusExecuted, canonical(out), ""
			rec.Outcome, rec.Error = storage.StatusExecuted, "reconciled after a restart: the system of record shows it was done"
			rec.Changes = reconciledChanges(ctx, d, act, out) // before unknown: see changes.go
		case mandate.ENOTFOUND:
			if until := notDoneTrusted(d, act); d.Now().Before(until) {
				// A request of its own may still be on its way, and the
				// system of record would act on it until its deadline:
				// "not done" is not known yet. Ask again on a later pass.
				d.Logger.Info("action not done so far, but its request may still arrive until its deadline; asking again later", "action_id", act.ID, "until", until)
				rep.Unknown++
				continue
			}
			act.Status, act.Error = storage.StatusFailed, "not done: the system of record has no change made with this action's idempotency key; nothing was retried"
			rec.Outcome, rec.Error = storage.StatusFailed, "reconciled after a restart: "+act.Error
		default:
			// The backend cannot tell us now; leave it for the next pass.
			d.Logger.Warn("could not reconcile action", "action_id", act.ID, "err", err)
			rep.Unknown++
			continue
		}
		stamp(ctx, d, act.ID, rec) // the trace of the call that asked, from its attempt
		if err := d.DB.RecordOutcome(ctx, act, rec); mandate.ErrorCode(err) == mandate.ECONFLICT {
			// Its outcome was recorded meanwhile, by the process that made
			// the call (a write-behind held up in its writer) or by another
			// recovery: nothing was reconciled here, so count and log none.
			continue
		} else if err != nil {
			return rep, err
		}
		if act.Status == storage.StatusExecuted {
			rep.Executed++
		} else {
			rep.NotExecuted++
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
		err := e.resume(ctx, d, act)
		var stale *storage.StalePolicyError
		var staleRates *storage.StaleRatesError
		switch {
		case errors.Is(err, errUntrusted):
			d.Logger.Error("approved action not carried out: its row disagrees with its digest or its audit trail", "action_id", act.ID, "err", err)
			rep.Untrusted++
		case errors.Is(err, errRefusedNow):
			rep.Refused++
		case errors.As(err, &stale):
			d.Logger.Warn("approved action not carried out: this process does not hold the live policy", "action_id", act.ID, "err", stale.Error())
			rep.Stale++
		case errors.As(err, &staleRates):
			d.Logger.Warn("approved action not carried out: this process does not hold the live exchange rates", "action_id", act.ID, "err", staleRates.Error())
			rep.Stale++
		case err != nil:
			if mandate.ErrorCode(err) != mandate.ECONFLICT { // a conflict: another server claimed it
				d.Logger.Warn("could not resume approved action", "action_id", act.ID, "err", err)
				rep.Unknown++
			}
		default:
			rep.Resumed++
		}
	}
	return rep, nil
}

// notDoneTrusted is when a lookup by key that finds nothing says the
// action was not done: every change it sent carried a deadline no later
// than execute's budget after it was recorded as executing (UpdatedAt),
// past which the system of record refuses it, and clocks may disagree by
// ClockSkew.
func notDoneTrusted(d *Deps, act *storage.Action) time.Time {
	return act.UpdatedAt.Add(execBudget(d) + d.ClockSkew)
}

// resume claims an approved action and carries it out through the guard's
// execute path, with the facts read afresh. It re-decides the action under
// the live policy, in the transaction that claims it: the approver must
// still be let approve it and the agent's rules must not deny it now (an
// emergency rule added since the approval stops it). An action refused now
// is denied and audited, and resume returns errRefusedNow; a process that
// does not hold the live policy does nothing and gets a
// *storage.StalePolicyError (not the live rates: a *storage.StaleRatesError).
//
// The row is checked first, as an approval checks it (review): its
// arguments against their digest and the whole row against its audit
// records. The row is not chained, so a writer of the actions table could
// otherwise mark a pending refund approved (or rewrite an approved one's
// amount) and have recovery carry out what nobody approved. Such an action
// is left alone, its refusal audited once, and resume returns errUntrusted.
func (s spec[A]) resume(ctx context.Context, d *Deps, act *storage.Action) error {
	if err := trustedRow(ctx, d, act); err != nil {
		if rerr := d.DB.RefuseRecovery(ctx, act, d.Policy.Policy().Version, mandate.ErrorMessage(err)); rerr != nil {
			d.Logger.Error("audit write failed", "err", rerr)
		}
		return fmt.Errorf("%w: %w", errUntrusted, err)
	}
	a, err := s.bindStored(act, mandate.EINVALID)
	if err != nil {
		return err
	}
	attrs := map[string]any{}
	if s.load != nil {
		if attrs, err = s.load(ctx, d, &a); err != nil {
			return err
		}
	}
	pol := d.Policy.Policy()
	held := heldPolicy(d, pol)
	heldRates(d, &held, attrs)
	log := d.Logger.With("action_id", act.ID, "tool", act.Tool, "agent", act.Agent)
	claimed, err := d.DB.ClaimApprovedUnder(ctx, act.ID, &held, s.claimCheck(pol, attrs, &a))
	if err != nil {
		return err
	}
	if claimed.Status == storage.StatusDenied {
		log.Info("approved action refused by the live policy; denied, not carried out")
		return errRefusedNow
	}
	execute(ctx, d, s, &a, claimed, log, false)
	return nil
}

// trustedRow refuses an action whose arguments do not match their digest
// or whose row disagrees with its audit records (checkTrail).
func trustedRow(ctx context.Context, d *Deps, act *storage.Action) error {
	if storage.Digest(act.Args) != act.ArgsDigest {
		return mandate.Errorf(mandate.ECONFLICT, "action %s: its arguments do not match their digest, so it is not carried out", act.ID)
	}
	return checkTrail(ctx, d, act)
}

// errUntrusted is resume's answer for an approved action whose row fails
// trustedRow: not carried out, its refusal audited.
var errUntrusted = errors.New("tools: the approved action's row is not backed by its audit trail")

// errRefusedNow is resume's answer for an approved action the live policy
// now refuses: it was denied and audited instead of carried out.
var errRefusedNow = errors.New("tools: the live policy now refuses this approved action")
