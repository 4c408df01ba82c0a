package tools

import (
	"context"
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
		// backend is read.
		return nil, mandate.Errorf(mandate.EDENIED, "%s asked for action %s, so %s cannot decide it: another person must", act.Agent, id, approver)
	}
	if e, ok := lookup(act.Tool); ok {
		return e.review(ctx, dd, act, approver, comment, approve)
	}
	return nil, mandate.Errorf(mandate.EINVALID, "action %s is a %s, which has no approval", id, act.Tool)
}

// review decides a pending action with the tool's own binding, facts and
// execution, never a second copy of them.
func (s spec[A]) review(ctx context.Context, d *Deps, act *storage.Action, approver, comment string, approve bool) (*storage.Action, error) {
	log := d.Logger.With("action_id", act.ID, "tool", act.Tool, "agent", act.Agent, "approver", approver)
	if act.Status != storage.StatusPending {
		return nil, mandate.Errorf(mandate.ECONFLICT, "action %s is %s, not pending: it was already decided", act.ID, act.Status)
	}
	if storage.Digest(act.Args) != act.ArgsDigest {
		return nil, mandate.Errorf(mandate.ECONFLICT, "action %s: its arguments do not match their digest, so it cannot be approved", act.ID)
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
	var refusal *policy.Decision
	// check runs inside the transaction that records the decision, with
	// usage counted there: the approver's rule and the agent's rules are
	// both judged as things stand at that moment.
	check := func(cur *storage.Action, u storage.Usage) (storage.Review, error) {
		facts := maps.Clone(attrs)
		currency := cur.Currency
		if sc, ok := any(&a).(scoped); ok {
			_, _, currency = sc.scope()
		}
		if currency != "" {
			maps.Copy(facts, usageAttrs(u, currency))
		}
		pol := d.Policy.Policy()
		rv := storage.Review{Approver: approver, Approve: approve, Comment: comment, Attrs: canonical(facts)}
		may := pol.Decide(policy.Request{Agent: approver, Tool: policy.ApprovalPrefix + act.Tool, Attrs: facts})
		if may.Effect != policy.Allow {
			refusal = &may
			return rv, mandate.Errorf(mandate.EDENIED, "the rules do not let %s decide the %s", approver, s.describe(&a))
		}
		rv.Decision, rv.Rule, rv.PolicyVersion = may.Effect, may.RuleText(), may.Version
		if !approve {
			return rv, nil
		}
		// The approval only stands if the policy, as it is now, would still
		// let the agent ask for this.
		if now := pol.Decide(policy.Request{Agent: act.Agent, Tool: act.Tool, Attrs: facts}); now.Effect == policy.Deny {
			rv.Approve, rv.Decision, rv.Rule, rv.PolicyVersion = false, now.Effect, now.RuleText(), now.Version
			rv.Comment = "approved by " + approver + ", but the rules now refuse it: " + now.RuleText()
		}
		return rv, nil
	}
	decided, err := d.DB.Decide(ctx, act.ID, storage.Review{Approver: approver}, check)
	if refusal != nil {
		recordRefusal(ctx, d, act, approver, attrs, *refusal)
		log.Info("approver not allowed", "rule", refusal.RuleText())
	}
	if err != nil {
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
	claimed, err := d.DB.ClaimApproved(ctx, act.ID)
	if err != nil {
		return nil, err
	}
	log.Info("approved; executing")
	execute(ctx, d, s, &a, claimed, log)
	return claimed, nil
}

// recordRefusal records an approver the policy does not let decide an action; the
// action stays pending.
func recordRefusal(ctx context.Context, d *Deps, act *storage.Action, approver string, attrs map[string]any, dec policy.Decision) {
	rec := &storage.Record{
		Agent: approver, Tool: act.Tool, Args: act.Args, Attrs: canonical(attrs),
		Decision: dec.Effect, Rule: dec.RuleText(), PolicyVersion: dec.Version,
		ActionID: act.ID, Phase: storage.PhaseApproval, Outcome: "refused",
		Error: fmt.Sprintf("%s may not decide this action", approver),
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
