package tools

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// Approve approves the pending action id as approver and, if the approval
// stands, executes it once. Before anything changes it re-reads the facts
// from the systems of record and asks the current policy twice: may this
// approver approve this action now (approve_TOOL must allow), and does the
// policy still let the agent that asked do it (a deny now denies the
// action). It returns the action as it ended: executed with its result,
// failed with the backend's error, or denied by the current policy together
// with an error. Two approvers at once, or approval racing expiry, execute
// it at most once: storage.Decide and storage.ClaimApproved serialize them.
func Approve(ctx context.Context, d *Deps, id, approver, comment string) (*storage.Action, error) {
	return review(ctx, d, id, approver, comment, true)
}

// Deny denies the pending action id as approver, with a comment the agent
// sees. Denying needs no fresh facts: it changes nothing outside Mandate.
// The approver must still be one the policy lets approve this action.
func Deny(ctx context.Context, d *Deps, id, approver, comment string) (*storage.Action, error) {
	return review(ctx, d, id, approver, comment, false)
}

func review(ctx context.Context, d *Deps, id, approver, comment string, approve bool) (*storage.Action, error) {
	dd := withDefaults(d)
	if len(comment) > maxText {
		return nil, mandate.Errorf(mandate.EINVALID, "the comment is %d bytes; the limit is %d", len(comment), maxText)
	}
	if !approve && comment == "" {
		return nil, mandate.Errorf(mandate.EINVALID, "a denial needs a comment: the agent passes it on to the customer")
	}
	act, err := dd.DB.Action(ctx, id)
	if err != nil {
		return nil, err
	}
	if approver == act.Agent {
		// Checked again inside storage.Decide; refused here before any
		// backend is read. Either way it is recorded: the identity that
		// asked trying to approve is a security event.
		err := mandate.Errorf(mandate.EDENIED, "%s asked for action %s, so %s cannot decide it: another person must", act.Agent, id, approver)
		recordRefusal(ctx, dd, act, approver, comment, nil, policy.Decision{Effect: policy.Deny, Version: dd.Policy.Policy().Version},
			"self-approval refused: "+mandate.ErrorMessage(err))
		dd.Logger.Warn("self-approval refused", "action_id", act.ID, "tool", act.Tool, "agent", act.Agent)
		return nil, err
	}
	if e, ok := lookup(act.Tool); ok {
		return e.review(ctx, dd, act, approver, comment, approve)
	}
	return nil, mandate.Errorf(mandate.EINVALID, "action %s is a %s, which has no approval", id, act.Tool)
}

// heldPolicy names the policy d decides under, for the check that it is
// the live one.
func heldPolicy(d *Deps, pol *policy.Policy) storage.PolicyRef {
	ref := storage.PolicyRef{Version: pol.Version, ModelFile: d.ModelFile, PolicyFile: d.PolicyFile}
	if ref.PolicyFile == "" {
		ref.PolicyFile = "an unnamed policy file"
	}
	if ref.ModelFile == "" {
		ref.ModelFile = "an unnamed model file"
	}
	return ref
}

// heldRates adds to held the exchange rates facts were converted with, if
// any (refunds and cancellations record rates_version): an approval is
// then refused unless they are the live rates the servers recorded, so an
// approving process with other rates (approvals --rates FILE, an admin
// host's old rates.csv) cannot judge limits on a base amount of its own.
func heldRates(d *Deps, held *storage.PolicyRef, facts map[string]any) {
	v, _ := facts[policy.FactRatesVersion].(string)
	if v == "" {
		return
	}
	held.Rates, held.RatesFile = v, "an unnamed rates file"
	if t := d.Rates.Table(); t.Version == v {
		held.RatesFile = t.Name
	}
}

// factsNow adds the usage counted now to the facts read for the action.
func (s spec[A]) factsNow(attrs map[string]any, a *A, act *storage.Action, u storage.Usage) map[string]any {
	facts := maps.Clone(attrs)
	currency := act.Currency
	if sc, ok := any(a).(scoped); ok {
		_, _, currency = sc.scope()
	}
	if currency != "" {
		maps.Copy(facts, usageAttrs(u, currency))
	}
	if decidedAs(act) != act.Tool {
		// A revert's facts name the action it reverts, as its attempt's did
		// (revertTool); its key is the one ApplyRemediation gave it.
		facts[RevertAttr] = revertedID(act.IdempotencyKey)
	}
	return facts
}

// redecide asks pol, as things stand now, whether approver may approve the
// action (approve_TOOL must allow) and whether the agent that asked may
// still have it (a deny now wins). It returns the review to record and, if
// the approver may not approve it, the decision that says so; a review that
// does not approve carries a Note saying why.
//
// A denial (approve false) only needs the approver's rule: a person's
// denial stands whatever the agent's rules say now.
func (s spec[A]) redecide(pol *policy.Policy, act *storage.Action, approver string, facts map[string]any, approve bool) (storage.Review, *policy.Decision) {
	rv := storage.Review{Approver: approver, Approve: approve, Attrs: canonical(facts)}
	may := pol.Decide(policy.Request{Agent: approver, Tool: policy.ApprovalPrefix + act.Tool, Attrs: facts})
	if may.Effect != policy.Allow {
		rv.Approve, rv.Decision, rv.Rule, rv.PolicyVersion = false, may.Effect, may.RuleText(), may.Version
		rv.Note = "approved by " + approver + ", but the rules no longer let " + approver + " approve it: " + may.RuleText()
		return rv, &may
	}
	rv.Decision, rv.Rule, rv.PolicyVersion = may.Effect, may.RuleText(), may.Version
	if !approve {
		return rv, nil
	}
	if now := pol.Decide(policy.Request{Agent: act.Agent, Tool: decidedAs(act), Attrs: facts}); now.Effect == policy.Deny {
		rv.Approve, rv.Decision, rv.Rule, rv.PolicyVersion = false, now.Effect, now.RuleText(), now.Version
		rv.Note = "approved by " + approver + ", but the rules now refuse it: " + now.RuleText()
	}
	return rv, nil
}

// claimCheck is the check of storage.ClaimApprovedUnder for an approved
// action with arguments a and facts attrs: redecide under pol, with the
// usage counted at the claim, as its approver. Both routes that carry out
// an approved action (review and Recover) claim it through this one check.
func (s spec[A]) claimCheck(pol *policy.Policy, attrs map[string]any, a *A) func(*storage.Action, storage.Approval, storage.Usage) (storage.Review, error) {
	return func(cur *storage.Action, ap storage.Approval, u storage.Usage) (storage.Review, error) {
		if u.Suspended != 0 {
			// Held, not denied: it stays approved until its agent is resumed.
			return storage.Review{}, &storage.SuspendedError{Agent: cur.Agent, ID: u.Suspended}
		}
		rv, _ := s.redecide(pol, cur, ap.Approver, s.factsNow(attrs, a, cur, u), true)
		return rv, nil
	}
}

// review decides a pending action with the tool's own binding, facts and
// execution, never a second copy of them.
//
// It decides under one policy, pol, read once: storage.Decide and
// storage.ClaimApprovedUnder refuse, inside the transactions that record
// the decision and the claim, unless pol is the live policy recorded in
// the database, so no route (web, CLI) approves under a policy another
// process has replaced.
func (s spec[A]) review(ctx context.Context, d *Deps, act *storage.Action, approver, comment string, approve bool) (*storage.Action, error) {
	log := d.Logger.With("action_id", act.ID, "tool", act.Tool, "agent", act.Agent, "approver", approver)
	if act.Status != storage.StatusPending {
		return nil, mandate.Errorf(mandate.ECONFLICT, "action %s is %s, not pending: it was already decided", act.ID, act.Status)
	}
	pol := d.Policy.Policy()
	if storage.Digest(act.Args) != act.ArgsDigest {
		err := mandate.Errorf(mandate.ECONFLICT, "action %s: its arguments do not match their digest, so it cannot be approved", act.ID)
		recordRefusal(ctx, d, act, approver, comment, nil, policy.Decision{Effect: policy.Deny, Version: pol.Version}, mandate.ErrorMessage(err))
		return nil, err
	}
	if approve {
		if err := checkTrail(ctx, d, act); err != nil {
			recordRefusal(ctx, d, act, approver, comment, nil, policy.Decision{Effect: policy.Deny, Version: pol.Version}, mandate.ErrorMessage(err))
			return nil, err
		}
	}
	a, err := s.bindStored(act, mandate.ECONFLICT)
	if err != nil {
		return nil, err
	}
	attrs := map[string]any{}
	if s.load != nil {
		var err error
		if attrs, err = s.load(ctx, d, &a); err != nil {
			// No facts, no decision: the action stays pending.
			return nil, mandate.Errorf(mandate.ECONFLICT, "the facts for %s could not be read now (%s); try again or deny it", s.describe(&a), mandate.ErrorMessage(err))
		}
	}
	held := heldPolicy(d, pol)
	heldRates(d, &held, attrs)
	var refusal *policy.Decision
	var suspended *storage.SuspendedError
	var refusalFacts map[string]any
	// check runs inside the transaction that records the decision, with
	// usage counted there: the approver's rule and the agent's rules are
	// both judged as things stand at that moment.
	check := func(cur *storage.Action, u storage.Usage) (storage.Review, error) {
		facts := s.factsNow(attrs, &a, cur, u)
		if approve && u.Suspended != 0 {
			// The kill switch holds the agent's pending actions: approving
			// waits for its resumption; denying is always possible.
			suspended = &storage.SuspendedError{Agent: cur.Agent, ID: u.Suspended}
			return storage.Review{}, suspended
		}
		rv, no := s.redecide(pol, act, approver, facts, approve)
		rv.Comment = comment
		if no != nil {
			refusal, refusalFacts = no, facts
			return rv, mandate.Errorf(mandate.EDENIED, "the rules do not let %s decide the %s", approver, s.describe(&a))
		}
		return rv, nil
	}
	decided, err := d.DB.Decide(ctx, act.ID, storage.Review{Approver: approver, Comment: comment, Held: &held}, check)
	if suspended != nil {
		recordRefusal(ctx, d, act, approver, comment, nil, policy.Decision{Effect: policy.Deny, Version: pol.Version}, "held: "+suspended.Error())
		log.Info("approval held: the agent is suspended", "suspension", suspended.ID)
	}
	if refusal != nil {
		recordRefusal(ctx, d, act, approver, comment, refusalFacts, *refusal, fmt.Sprintf("%s may not decide this action", approver))
		log.Info("approver not allowed", "rule", refusal.RuleText())
	}
	if err != nil {
		var stale *storage.StalePolicyError
		var staleRates *storage.StaleRatesError
		if errors.As(err, &stale) {
			log.Warn("refused to decide under a policy that is not the live one", "held", held.Version, "live", liveVersion(stale))
		} else if errors.As(err, &staleRates) {
			log.Warn("refused to decide with exchange rates that are not the live ones", "held", held.Rates, "live", liveRatesVersion(staleRates))
		}
		return nil, err
	}
	if !approve {
		log.Info("denied by a person")
		return decided, nil
	}
	if decided.Status == storage.StatusDenied {
		log.Info("approval refused by the current policy")
		return decided, mandate.Errorf(mandate.EDENIED, "the rules now refuse the %s, so it was denied and will not happen", s.describe(&a))
	}
	// Approved: from here on the caller hanging up (a closed browser tab)
	// must not strand the action between approved and executed.
	ctx = context.WithoutCancel(ctx)
	claimed, err := d.DB.ClaimApprovedUnder(ctx, act.ID, &held, s.claimCheck(pol, attrs, &a))
	if err != nil {
		var stale *storage.StalePolicyError
		var staleRates *storage.StaleRatesError
		if errors.As(err, &stale) {
			return nil, mandate.Errorf(mandate.ECONFLICT, "action %s was approved, but the policy changed before it could run (%s); a server holding the live policy will carry it out or refuse it under that policy", act.ID, stale.Error())
		} else if errors.As(err, &staleRates) {
			return nil, mandate.Errorf(mandate.ECONFLICT, "action %s was approved, but the exchange rates changed before it could run (%s); a server holding the live rates will carry it out or refuse it with them", act.ID, staleRates.Error())
		}
		return nil, err
	}
	if claimed.Status == storage.StatusDenied {
		log.Info("approved, but refused by the current policy before it ran")
		return claimed, mandate.Errorf(mandate.EDENIED, "the rules now refuse the %s, so it was denied and will not happen", s.describe(&a))
	}
	log.Info("approved; executing")
	execute(ctx, d, s, &a, claimed, log, false)
	return claimed, nil
}

func liveVersion(e *storage.StalePolicyError) string {
	if e.Live == nil {
		return ""
	}
	return e.Live.Version
}

func liveRatesVersion(e *storage.StaleRatesError) string {
	if e.Live == nil {
		return ""
	}
	return e.Live.Version
}

// recordRefusal records that approver tried to decide an action and was
// refused, for why, by dec; the action stays as it was.
func recordRefusal(ctx context.Context, d *Deps, act *storage.Action, approver, comment string, attrs map[string]any, dec policy.Decision, why string) {
	rec := &storage.Record{
		Agent: approver, Tool: act.Tool, Args: act.Args, Attrs: canonical(attrs),
		Decision: dec.Effect, Rule: dec.RuleText(), PolicyVersion: dec.Version,
		ActionID: act.ID, Phase: storage.PhaseApproval, Outcome: storage.OutcomeRefused,
		Error: why, Approver: approver, Comment: comment,
	}
	if attrs == nil {
		rec.Attrs = nil
	}
	if err := d.DB.Append(ctx, rec); err != nil {
		d.Logger.Error("audit write failed", "err", err)
	}
}

// withDefaults returns a copy of d with the defaults ServerTools would set,
// so a caller outside MCP (the CLI, the admin server) can pass a bare Deps.
func withDefaults(d *Deps) *Deps {
	dd := *d
	dd.setDefaults()
	return &dd
}
