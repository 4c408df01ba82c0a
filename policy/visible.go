package policy

// CanEverUse reports whether some rule could ever give agent allow or
// require_approval on tool: a rule of the agent's scope for the tool with
// either effect, or an allow for *, whatever its condition. It decides what
// tools/list shows; the decision itself is always Decide.
func (p *Policy) CanEverUse(agent, tool string) bool {
	if !p.identities[agent] {
		return false
	}
	tenant := p.tenantOf[agent]
	for subject := range p.scopes[agent+"\x00"+tool] {
		for _, r := range p.byTool[tool][subject] {
			if r.Effect != Deny && r.appliesIn(tenant) {
				return true
			}
		}
	}
	for _, r := range p.byTool[tool]["*"] {
		if r.Effect == Allow && r.appliesIn(tenant) {
			return true
		}
	}
	return false
}

// Names returns every identity and role the policy names.
func (p *Policy) Names() []string {
	names := make([]string, 0, len(p.known))
	for n := range p.known {
		names = append(names, n)
	}
	return names
}
