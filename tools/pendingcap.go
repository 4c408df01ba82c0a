package tools

import (
	"fmt"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// An agent could fill the approval queue faster than people can read it,
// burying the requests that matter. So each agent may have only so many
// actions waiting for a person; beyond that, a call the rules would send
// for approval is refused and audited, and the agent is told to have the
// customer wait for the follow-up instead of asking again.
const (
	DefaultMaxPending = 100
	// MaxMaxPending bounds the flag: a queue of more than this per agent is
	// no longer something people work through. There is no "no cap".
	MaxMaxPending = 10000
)

// PendingCapRule is how the audit trail names the refusal's reason, in the
// rule field, since no policy rule refused it.
const PendingCapRule = "pending cap"

// maxPending is the cap in force: Deps.MaxPending, or the default when zero.
func (d *Deps) maxPending() int64 {
	if d.MaxPending <= 0 {
		return DefaultMaxPending
	}
	return int64(d.MaxPending)
}

// overPendingCap turns a decision to ask a person into a refusal when the
// agent already has as many actions waiting as it may: u is counted in the
// transaction that records this attempt, so processes racing cannot go past
// the cap. It reports whether it refused.
func overPendingCap(d *Deps, agent string, u storage.Usage, dec *policy.Decision) bool {
	if dec.Effect != policy.RequireApproval || u.AgentPending < d.maxPending() {
		return false
	}
	*dec = policy.Decision{Effect: policy.Deny, Version: dec.Version,
		Reason: fmt.Sprintf("%s already has %d actions waiting for a person, the most allowed (--max-pending %d)", agent, u.AgentPending, d.maxPending())}
	return true
}

// pendingCapRule is the rule text recorded for a refusal by the cap.
func pendingCapRule(dec policy.Decision) string { return PendingCapRule + ": " + dec.Reason }

// pendingCapResult tells the agent why nothing was queued and what to do.
func pendingCapResult(act *storage.Action, what string) *mcp.CallToolResult {
	res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status,
		Message: fmt.Sprintf("Not queued: the %s needs a person's approval, but too many of your requests are already waiting for one. Do not ask again now; tell the customer their request could not be passed on yet and that someone will follow up, or ask them to try again later.", what)}
	return structuredError(res)
}
