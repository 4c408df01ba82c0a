package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// The kill switch. A person suspends an agent with Suspend (CLI or admin
// page); the suspension is a row in the shared database, so every server
// refuses the agent:
//
//   - actions at once: the guard reads the suspension inside the write
//     transaction that decides and records the attempt (storage.Usage), so
//     no action decided after the suspend command returned can be allowed.
//     It is one more subquery in a statement the transaction already runs.
//   - lookups within SuspensionRefresh: a lookup takes no write
//     transaction, and a read of the database on every lookup would cost
//     more than the lookup's own record, so each process keeps the
//     (tiny) table of active suspensions and reads it again when it is
//     older than SuspensionRefresh. If it cannot be read, lookups are
//     refused: fail closed.
//   - approvals of its pending actions: refused, inside the transaction
//     that would record the approval, until it is resumed (a denial still
//     works). Recovery leaves an approved action of a suspended agent
//     approved, and carries it out after the agent is resumed.
//
// Every refusal is an audit record, as every denied call is, and is not
// rate-limited: the attempt record is the decision itself, the identity is
// authenticated (so the flood is attributable and can be cut at its source,
// by revoking its key or stopping its process), and dropping records would
// leave refused calls unaccounted for.

// SuspensionRefresh is the most a process's view of who is suspended, used
// for lookups only, may lag the database.
const SuspensionRefresh = 250 * time.Millisecond

// Admin pseudo-tools of the policy (policy.Tools).
const (
	SuspendTool = "suspend_agent"
	ResumeTool  = "resume_agent"
)

// Suspend suspends agent as the person by, for reason, after the policy d
// holds lets by suspend_agent; the live-policy check and the audit record
// are in the transaction that stores the suspension. With actionsOnly the
// agent's lookups are still answered. A refusal by the rules is audited.
func Suspend(ctx context.Context, d *Deps, by, agent, reason string, actionsOnly bool) (*storage.Suspension, error) {
	d = withDefaults(d)
	reason = strings.TrimSpace(reason)
	if err := required("reason", reason, maxText); err != nil {
		return nil, err
	}
	args := map[string]any{"agent": agent, "reason": reason, "actions_only": actionsOnly}
	rec, held, err := adminDecide(ctx, d, by, SuspendTool, agent, args)
	if err != nil {
		return nil, err
	}
	s, err := d.DB.Suspend(ctx, storage.SuspendRequest{Agent: agent, By: by, Reason: reason, ActionsOnly: actionsOnly, Held: held, Audit: rec})
	if err != nil {
		return nil, adminFailed(ctx, d, rec, err)
	}
	dropSuspensionCache(d.DB)
	d.Logger.Warn("agent suspended", "agent", agent, "by", by, "suspension", s.ID, "scope", s.Scope())
	return s, nil
}

// Resume lifts agent's suspension as the person by, under the same rules
// and audit as Suspend (resume_agent).
func Resume(ctx context.Context, d *Deps, by, agent string) (*storage.Suspension, error) {
	d = withDefaults(d)
	rec, held, err := adminDecide(ctx, d, by, ResumeTool, agent, map[string]any{"agent": agent})
	if err != nil {
		return nil, err
	}
	s, err := d.DB.Resume(ctx, storage.SuspendRequest{Agent: agent, By: by, Held: held, Audit: rec})
	if err != nil {
		return nil, adminFailed(ctx, d, rec, err)
	}
	dropSuspensionCache(d.DB)
	d.Logger.Warn("agent resumed", "agent", agent, "by", by, "suspension", s.ID)
	return s, nil
}

// adminDecide checks that agent names an agent and asks the policy d holds
// whether by may use tool on it. It returns the audit record of the act
// (to be stored with it) and the policy it was decided under; a refusal
// is audited here and returned as a denied error.
func adminDecide(ctx context.Context, d *Deps, by, tool, agent string, args map[string]any) (*storage.Record, storage.PolicyRef, error) {
	pol := d.Policy.Policy()
	held := heldPolicy(d, pol)
	if p := mandate.NameProblem(agent); p != "" {
		return nil, held, mandate.Errorf(mandate.EINVALID, "%q: %s", mandate.Visible(agent, false), p)
	}
	if !isAgent(pol, agent) {
		return nil, held, mandate.Errorf(mandate.EINVALID, "%s is not an agent in the policy (an identity some rule lets use a tool)", agent)
	}
	b, _ := json.Marshal(args)
	dec := pol.Decide(policy.Request{Agent: by, Tool: tool, Attrs: map[string]any{}})
	rec := &storage.Record{Agent: by, Tool: tool, Args: b, Decision: dec.Effect, Rule: dec.RuleText(),
		PolicyVersion: dec.Version, Phase: storage.PhaseAttempt, Outcome: storage.StatusExecuted, Approver: by}
	if dec.Effect != policy.Allow {
		rec.Decision, rec.Outcome, rec.Error = policy.Deny, storage.OutcomeRefused, fmt.Sprintf("%s may not %s: %s", by, strings.ReplaceAll(tool, "_", " "), dec.RuleText())
		if err := d.DB.Append(ctx, rec); err != nil {
			return nil, held, err
		}
		d.Logger.Warn("refused", "tool", tool, "by", by, "agent", agent, "rule", dec.RuleText())
		return nil, held, mandate.Errorf(mandate.EDENIED, "the rules do not let %s %s (%s)", by, strings.ReplaceAll(tool, "_", " "), dec.RuleText())
	}
	return rec, held, nil
}

// adminFailed audits an allowed suspend or resume that storage refused
// because the policy held is not the live one, and returns err.
func adminFailed(ctx context.Context, d *Deps, rec *storage.Record, err error) error {
	var stale *storage.StalePolicyError
	if errors.As(err, &stale) {
		rec.Decision, rec.Outcome, rec.Error = policy.Deny, storage.OutcomeRefused, "stale policy: "+err.Error()
		if aerr := d.DB.Append(ctx, rec); aerr != nil {
			d.Logger.Error("audit write failed", "err", aerr)
		}
	}
	return err
}

// isAgent reports whether name is an identity some rule lets use an MCP tool.
func isAgent(p *policy.Policy, name string) bool {
	if !p.IsIdentity(name) {
		return false
	}
	for _, t := range policy.MCPToolNames() {
		if p.CanEverUse(name, t) {
			return true
		}
	}
	return false
}

// suspendedReason is the audit reason of a call refused for a suspension.
func suspendedReason(agent string, id int64) string {
	if id < 0 {
		return "suspensions could not be read, so the call was refused"
	}
	return fmt.Sprintf("agent suspended: %s is under suspension %d", agent, id)
}

// suspendedResult is what a suspended agent gets. It names the suspension,
// not the reason the person gave: that may say what they suspect of the
// agent or of a customer, which the agent must not learn or repeat.
func suspendedResult(act *storage.Action, what string, action bool, agent string, id int64) *mcp.CallToolResult {
	msg := fmt.Sprintf("Not done: this agent (%s) is suspended by an operator (suspension %d), so the %s was refused and nothing was changed. Do not retry; tell the customer a member of staff will follow up.", agent, id, what)
	if id < 0 {
		msg = fmt.Sprintf("Not done: whether this agent is suspended could not be checked, so the %s was refused. Try again later.", what)
	}
	if !action {
		code := mandate.EDENIED
		if id < 0 {
			code = mandate.EUNAVAILABLE
		}
		return errorResult(mandate.Errorf(code, "%s", msg))
	}
	return structuredError(&ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status, Message: msg})
}

// suspensionCache is one process's view of the active suspensions of one
// database, for lookups.
type suspensionCache struct {
	mu     sync.Mutex
	at     time.Time
	active map[string]*storage.Suspension
	live   string // the live policy version when read
	err    error
}

var suspensionCaches sync.Map // *storage.DB -> *suspensionCache

func dropSuspensionCache(db *storage.DB) { suspensionCaches.Delete(db) }

// lookupSuspended is the id of agent's suspension that refuses lookups
// (not an actions-only one), 0 if none, -1 if it cannot be known.
func lookupSuspended(ctx context.Context, d *Deps, agent string) int64 {
	s, _ := lookupView(ctx, d, agent, "")
	return s
}

// lookupView is lookupSuspended and the live policy version, read together
// at most every SuspensionRefresh: one live policy holds for lookups too, so
// a process holding another version than the live one (it has not reloaded
// an edit yet, or runs other files) shows nothing under it, as it does
// nothing (decide's stale case). held is the version this process holds:
// a cached live version that differs from it is read again at once, so a
// reload here or elsewhere a moment ago refuses no lookup; only a process
// that really holds another version keeps reading it, call after call.
func lookupView(ctx context.Context, d *Deps, agent, held string) (suspended int64, live string) {
	v, ok := suspensionCaches.Load(d.DB)
	if !ok {
		v, _ = suspensionCaches.LoadOrStore(d.DB, &suspensionCache{})
	}
	c := v.(*suspensionCache)
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); c.at.IsZero() || now.Sub(c.at) >= SuspensionRefresh || now.Before(c.at) || (held != "" && c.live != held) {
		list, err := d.DB.ActiveSuspensions(context.WithoutCancel(ctx))
		if err == nil {
			c.live, err = d.DB.LiveVersion(context.WithoutCancel(ctx))
		}
		c.err = err
		if err == nil {
			c.at, c.active = now, make(map[string]*storage.Suspension, len(list))
			for _, s := range list {
				c.active[s.Agent] = s
			}
		} else {
			c.at = time.Time{} // read again on the next call
		}
	}
	if c.err != nil {
		d.Logger.Error("suspensions or the live policy could not be read; refusing lookups", "err", c.err)
		return -1, c.live
	}
	if s := c.active[agent]; s != nil && !s.ActionsOnly {
		return s.ID, c.live
	}
	return 0, c.live
}

// Agents lists the identities of p that some rule lets use an MCP tool,
// sorted: the names a person may suspend.
func Agents(p *policy.Policy) []string {
	var out []string
	for _, n := range p.Names() {
		if isAgent(p, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
