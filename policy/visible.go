package policy

import "iter"

// CanEverUse reports whether some rule could ever give agent allow or
// require_approval on tool: a rule of the agent's scope for the tool with
// either effect, or an allow for *, whatever its condition. The guard
// reads facts only for such a tool, so a refusal by an emergency deny
// still names its rule; Offered is what tools/list shows.
func (p *Policy) CanEverUse(agent, tool string) bool {
	if !p.identities[agent] {
		return false
	}
	for subject, r := range p.candidates(agent, tool) {
		if r.Effect == Allow || (subject != "*" && r.Effect != Deny) {
			return true
		}
	}
	return false
}

// candidates yields each rule for tool that applies to agent in its
// tenant, with its subject: those of the agent's scope, then those for *
// (the rules Decide chooses among).
func (p *Policy) candidates(agent, tool string) iter.Seq2[string, *Rule] {
	return func(yield func(string, *Rule) bool) {
		tenant := p.tenantOf[agent]
		for subject := range p.scopes[agent+"\x00"+tool] {
			for _, r := range p.byTool[tool][subject] {
				if r.appliesIn(tenant) && !yield(subject, r) {
					return
				}
			}
		}
		for _, r := range p.byTool[tool]["*"] {
			if r.appliesIn(tenant) && !yield("*", r) {
				return
			}
		}
	}
}

// Offered reports whether tools/list shows agent the tool: CanEverUse,
// with two kinds of rule judged by their condition when it names no
// attribute and so is the same for every call. A deny that applies to the
// agent and always holds ("p, *, refund_order, true, deny") refuses every
// call, since the most restrictive matching rule wins, so the tool is not
// offered; a grant that never holds ("false") grants nothing. Any other
// condition might hold or not, so it hides nothing.
func (p *Policy) Offered(agent, tool string) bool {
	if !p.identities[agent] {
		return false
	}
	granted := false
	for subject, r := range p.candidates(agent, tool) {
		holds, constant := p.constant(r.Cond)
		switch {
		case r.Effect == Deny && constant && holds:
			return false
		case constant && !holds, r.Effect == Deny:
		case subject != "*" || r.Effect == Allow:
			granted = true
		}
	}
	return granted
}

// constant reports whether cond names no attribute, and if so whether it
// holds. A condition that fails to evaluate is not constant: Decide denies
// on it at request time, and CanEverUse leaves that to Decide.
func (p *Policy) constant(cond string) (holds, constant bool) {
	expr := p.conds[cond]
	if expr == nil || len(expr.Vars()) > 0 {
		return false, false
	}
	out, err := expr.Evaluate(nil)
	if err != nil {
		return false, false
	}
	b, ok := out.(bool)
	return b, ok
}

// Names returns every identity and role the policy names.
func (p *Policy) Names() []string {
	names := make([]string, 0, len(p.known))
	for n := range p.known {
		names = append(names, n)
	}
	return names
}
