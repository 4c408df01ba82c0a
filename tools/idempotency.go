package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// idempotencyKeyArg is the optional argument every action tool takes.
func idempotencyKeyArg() mcp.ToolOption {
	return mcp.WithString("idempotency_key", mcp.MaxLength(200),
		mcp.Description("Strongly recommended. A unique string you choose for this action, e.g. a UUID. If you retry with the same key and the same arguments, you get the first result back and nothing happens twice; the same key with different arguments is an error. "+
			"If a call times out, is cancelled or its answer is lost, ask get_action_status(idempotency_key=...) with the same key: it tells you whether the action was recorded and what happened; if not (not_found), nothing was done under that key and you may call again with the same key."))
}

// splitKey reads an action's arguments strictly (see argObject) and takes
// idempotency_key out of them, so the arguments that are audited and
// digested are the action's own. A lookup's arguments are only read: a key
// there is an unknown argument.
func splitKey(raw any, action bool) (any, string, error) {
	m, err := argObject(raw)
	if err != nil || !action {
		return m, "", err
	}
	v, present := m["idempotency_key"]
	if !present {
		return m, "", nil
	}
	var key string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &key) != nil {
		return nil, "", mandate.Errorf(mandate.EINVALID, "argument idempotency_key must be a string")
	}
	if err := validKey(key); err != nil {
		return nil, "", err
	}
	rest := make(fields, len(m)-1)
	for k, v := range m {
		if k != "idempotency_key" {
			rest[k] = v
		}
	}
	return rest, key, nil
}

// validKey checks an idempotency key: 1 to 200 bytes, not blank.
func validKey(key string) error {
	if strings.TrimSpace(key) == "" || len(key) > 200 {
		return mandate.Errorf(mandate.EINVALID, "argument idempotency_key must be 1 to 200 characters")
	}
	return nil
}

// replay answers a retry: if agent already made an action with key, it
// returns that action's result (done=true) without deciding or acting
// again; the same key with other arguments is an error. args gives the
// retry's arguments in canonical form, as the first attempt recorded them.
func replay(ctx context.Context, d *Deps, agent, tool, key string, args func(recorded json.RawMessage) []byte) (*mcp.CallToolResult, bool) {
	act, err := d.DB.ActionByKey(ctx, agent, key)
	if mandate.ErrorCode(err) == mandate.ENOTFOUND {
		return nil, false
	} else if err != nil {
		return errorResult(err), true
	}
	if act.Tool != tool || act.ArgsDigest != storage.Digest(args(act.Args)) {
		return errorResult(mandate.Errorf(mandate.EINVALID,
			"idempotency_key %q was already used for a different action (%s %s); use a new key for a new action", key, act.Tool, act.ID)), true
	}
	if res := guardReplay(ctx, d, agent, key, act.CustomerID); res != nil {
		return res, true
	}
	return actionResult(act), true
}

// guardReplay decides and records a retry's answer as what it is, a read
// of the agent's own action, like get_action_status by key: under the live
// policy, allowed by the rules for get_action_status, and in the audit
// trail before it is shown (a review found retries answered, an updated
// customer's details included, for an agent the live rules no longer let
// read anything, and never recorded). It returns the refusal, or nil when
// the answer may be shown. customer is the action's customer, whose data
// the answer shows (Record.ShownCustomer).
func guardReplay(ctx context.Context, d *Deps, agent, key, customer string) *mcp.CallToolResult {
	const tool = "get_action_status"
	held := d.Policy.Policy()
	_, live := lookupView(ctx, d, agent, held.Version)
	var dec policy.Decision
	stale := live != held.Version
	if stale {
		dec = policy.Decision{Effect: policy.Deny, Version: held.Version, Reason: staleReason(held.Version, live)}
	} else {
		dec = held.Decide(policy.Request{Agent: agent, Tool: tool})
	}
	args, _ := json.Marshal(map[string]string{"idempotency_key": key})
	rec := &storage.Record{Agent: agent, Tool: tool, Args: args, Credential: callCredential(ctx, agent),
		ActionID: newActionID(), Phase: storage.PhaseAttempt, Decision: dec.Effect, Rule: dec.RuleText(), PolicyVersion: dec.Version}
	stamp(ctx, d, "", rec)
	if dec.Effect != policy.Allow {
		rec.Outcome = "refused"
		if err := d.DB.Append(context.WithoutCancel(ctx), rec); err != nil {
			return auditFailedResult()
		}
		if stale {
			return errorResult(mandate.Errorf(mandate.EUNAVAILABLE, "Not shown: this server's rules are not the live ones (they may have just changed), so the earlier answer under this key was not looked up. Ask again in a few seconds; if it is refused again, pass it to a human."))
		}
		return errorResult(mandate.Errorf(mandate.EDENIED, "the rules do not allow %s to read what was done under an idempotency key (%s)", agent, tool))
	}
	rec.Outcome, rec.ShownCustomer = storage.OutcomeRead, customer
	if err := recordShown(ctx, d, rec); err != nil {
		return auditFailedResult()
	}
	return nil
}

// actionResult describes a recorded action as a tool result, for retries.
func actionResult(act *storage.Action) *mcp.CallToolResult {
	res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status, Result: object(act.Result)}
	switch act.Status {
	case storage.StatusExecuted:
		res.Message = fmt.Sprintf("Already done earlier (action %s); nothing was repeated.", act.ID)
	case storage.StatusPending:
		res.Message = fmt.Sprintf("This was already asked for and is waiting for a person's approval (reference %s). Check back with get_action_status.", act.ID)
	case storage.StatusExecuting, storage.StatusApproved:
		res.Message = fmt.Sprintf("This is being carried out now (action %s). Check back with get_action_status.", act.ID)
	default:
		res.Message = fmt.Sprintf("This was already tried and did not happen (action %s, %s). %s", act.ID, act.Status, act.Error)
		if act.Decision == policy.Deny {
			res.Message = fmt.Sprintf("This was already refused by the rules (action %s); retrying will not change it.", act.ID)
		}
		return structuredError(res)
	}
	return mcp.NewToolResultStructured(res, res.Message)
}
