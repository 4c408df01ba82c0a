package auth

import (
	"fmt"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

// Role is what a person may do in the admin page and the approvals CLI,
// read from the live policy on every request: it is never stored with the
// user, so removing a g line takes access away at once.
type Role int

const (
	// None: no access. Agents, unknown names and identities without an
	// approver or auditor role.
	None Role = iota
	// Auditor may read the audit trail and nothing else.
	Auditor
	// Approver may see the queue and decide what its approve_* rules allow.
	Approver
)

func (r Role) String() string {
	switch r {
	case Approver:
		return "approver"
	case Auditor:
		return "auditor"
	}
	return "none"
}

// AuditorRole is the role, granted with `g, NAME, auditor`, that lets a
// person read the audit trail without deciding anything. Defined in policy,
// so that `policy check` knows the role has no rules by design.
const AuditorRole = policy.AuditorRole

// RoleOf returns what name may do under p. An approver is an identity for
// which some approve_* rule could allow; an auditor holds AuditorRole. An
// identity that can call an action tool is an agent and gets None even if
// it also holds one of those roles: the thing being supervised must not be
// able to sign in where the supervising happens.
func RoleOf(p *policy.Policy, name string) Role {
	if p == nil || name == "" || !p.IsIdentity(name) || len(AgentTools(p, name)) > 0 {
		return None
	}
	for _, t := range policy.ToolNames() {
		if policy.Tools[t].Approval && p.CanEverUse(name, t) {
			return Approver
		}
	}
	if p.HasRole(name, AuditorRole) {
		return Auditor
	}
	return None
}

// AgentTools returns the action tools name could ever use under p: an
// identity with any is an agent.
func AgentTools(p *policy.Policy, name string) []string {
	var out []string
	for _, t := range policy.ToolNames() {
		if policy.Tools[t].Action && p.CanEverUse(name, t) {
			out = append(out, t)
		}
	}
	return out
}

// CheckUserName says why name cannot be an admin user under p, or returns
// nil. The name must be a plain identity name (no hidden, control,
// non-ASCII or markup characters: mandate.NameProblem), must not be
// confusable with any other identity or role in the policy (mandate.Skeleton),
// and must hold an approver or auditor role and not be an agent.
func CheckUserName(p *policy.Policy, name string) error {
	if prob := mandate.NameProblem(name); prob != "" {
		return mandate.Errorf(mandate.EINVALID, "%s", prob)
	}
	skel := mandate.Skeleton(name)
	for _, n := range p.Names() {
		if n != name && mandate.Skeleton(n) == skel {
			return mandate.Errorf(mandate.EINVALID, "%q is too easily mistaken for %q, which the policy already names; pick a name nobody could confuse", name, n)
		}
	}
	if !p.IsIdentity(name) {
		return mandate.Errorf(mandate.EINVALID, "%q is not an identity in the policy: grant it an approver role first (e.g. `g, %s, supervisor` in policy.csv)", name, name)
	}
	if tools := AgentTools(p, name); len(tools) > 0 {
		return mandate.Errorf(mandate.EINVALID, "%q is an agent (it can call %s); agents may not sign in to approve", name, strings.Join(tools, ", "))
	}
	if RoleOf(p, name) == None {
		return mandate.Errorf(mandate.EINVALID, "%q holds no approver role (no approve_* rule can allow it) and not the %q role in the policy", name, AuditorRole)
	}
	return nil
}

// describe is a short phrase for a role refusal.
func describe(name string) string {
	return fmt.Sprintf("%s holds no approver or %s role in the live policy", name, AuditorRole)
}
