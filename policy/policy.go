// Package policy decides whether an identity may call a tool with given
// attributes, using Casbin with the admins' model.conf and policy.csv.
//
// A Policy is immutable once loaded: reloading builds a new one and swaps it
// in atomically (Engine), because Casbin's own LoadPolicy crashes enforcers
// that are deciding at the same time.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/effector"
	"github.com/casbin/casbin/v2/model"
	defaultrolemanager "github.com/casbin/casbin/v2/rbac/default-role-manager"
	"github.com/casbin/govaluate"
)

// Request is one decision to make. Attrs holds the facts read from the
// system of record and the call's arguments, under the names in Tools.
type Request struct {
	Agent string
	Tool  string
	Attrs map[string]any
}

// Decision is the answer: an effect, the rule that produced it (nil when no
// rule matched or the request never reached the rules), a reason for people,
// and the version of the policy that decided.
type Decision struct {
	Effect  string
	Rule    *Rule
	Reason  string
	Version string
}

// PolicyError reports whether d is the default deny of a condition that
// could not be evaluated (a missing attribute, a condition that gave no
// boolean), not a rule's decision.
func (d Decision) PolicyError() bool {
	return d.Rule == nil && strings.HasPrefix(d.Reason, "policy error")
}

// RuleText is what the audit records as the deciding rule.
func (d Decision) RuleText() string {
	if d.Rule == nil {
		return "default deny: " + d.Reason
	}
	return d.Rule.String()
}

// Policy is a loaded, validated, immutable model and policy.
type Policy struct {
	Version string
	Rules   []Rule
	Grants  []Grant

	modelText  string
	byKey      map[string]*Rule
	conds      map[string]*govaluate.EvaluableExpression
	scopes     map[string]map[string]bool // identity + "\x00" + tool → subjects whose rules apply
	known      map[string]bool            // every identity and role named in the policy
	identities map[string]bool            // names that may act: never a role
	tenantOf   map[string]string          // identity → its tenant, if it has one
	byTool     map[string]map[string][]*Rule
	shards     sync.Map // scope key → *shard, built on first use
	// direct says the model's matcher is the shipped cond(p.cond, r.attrs),
	// so a decision can evaluate each candidate rule's compiled condition
	// itself (decideDirect) instead of through Casbin's Enforce, which
	// allocates dozens of times per call; TestDirectMatchesCasbin holds the two
	// to the same answers. Any other matcher goes through Casbin.
	direct  bool
	cacheMu sync.RWMutex
	cache   map[agentTool]*shard // (identity, tool) → its shard, a lookup without building the scope key
}

type agentTool struct{ agent, tool string }

// directMatcher is the shipped matcher as Casbin stores it.
const directMatcher = "cond(p_cond, r_attrs)"

// maxRoleDepth matches Casbin's own limit; deeper chains are refused at load
// rather than cut off silently.
const maxRoleDepth = 10

// Load parses, validates and compiles a model and a policy. Any problem is
// an error with file:line; nothing half-loaded is ever returned.
func Load(modelSrc, policySrc Source) (*Policy, error) {
	m, err := model.NewModelFromString(string(modelSrc.Data))
	if err != nil {
		return nil, &LoadError{[]string{fmt.Sprintf("%s: %v", modelSrc.Name, err)}}
	}
	if err := checkModel(m, modelSrc.Name); err != nil {
		return nil, err
	}
	parsed, err := parse(policySrc)
	if err != nil {
		return nil, err
	}
	p := &Policy{
		Version:    Version(modelSrc.Data, policySrc.Data),
		Rules:      parsed.rules,
		Grants:     parsed.grants,
		modelText:  string(modelSrc.Data),
		byKey:      map[string]*Rule{},
		conds:      parsed.conds,
		known:      map[string]bool{},
		identities: map[string]bool{},
		tenantOf:   map[string]string{},
		byTool:     map[string]map[string][]*Rule{},
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		p.byKey[r.key()] = r
		if p.byTool[r.Tool] == nil {
			p.byTool[r.Tool] = map[string][]*Rule{}
		}
		p.byTool[r.Tool][r.Subject] = append(p.byTool[r.Tool][r.Subject], r)
		if r.Subject != "*" {
			p.known[r.Subject] = true
		}
	}
	if err := p.buildScopes(); err != nil {
		return nil, err
	}
	p.direct = strings.Join(strings.Fields(m["m"]["m"].Value), " ") == directMatcher
	// Enforce one rule now, with every attribute present, so a model whose
	// matcher Casbin cannot compile or evaluate fails at load, not at the
	// first request.
	if len(p.Rules) > 0 {
		sh, err := p.newShard([]*Rule{&p.Rules[0]})
		if err == nil {
			_, _, err = sh.e.EnforceEx("", p.Rules[0].Tool, sampleAttrs)
		}
		if err != nil {
			return nil, &LoadError{[]string{fmt.Sprintf("%s: the matcher does not work: %v", modelSrc.Name, err)}}
		}
	}
	return p, nil
}

// checkModel insists on the request and rule shapes the guard and this
// package rely on; the matcher and comments are the admin's to change.
func checkModel(m model.Model, name string) error {
	want := map[string][]string{"r": {"r_sub", "r_tool", "r_attrs"}, "p": {"p_sub", "p_tool", "p_cond", "p_eft"}}
	for sec, tokens := range want {
		a, ok := m[sec][sec]
		if !ok || !slices.Equal(a.Tokens, tokens) {
			return &LoadError{[]string{fmt.Sprintf("%s: %s must be defined as %s = %s", name, sec, sec,
				strings.ReplaceAll(strings.Join(tokens, ", "), sec+"_", ""))}}
		}
	}
	if _, ok := m["m"]["m"]; !ok {
		return &LoadError{[]string{name + ": [matchers] must define m"}}
	}
	return nil
}

// buildScopes resolves, for every identity and tool, which rule subjects
// apply: the identity's own rules for the tool if it has any, else those of
// its nearest roles that do (a role's rules for a tool replace the ones it
// inherits for that tool). Rules for * are added at decision time. Role
// cycles and chains deeper than Casbin's limit are refused with file:line.
func (p *Policy) buildScopes() error {
	// Casbin's role manager holds the grants that hold everywhere; grants
	// in a tenant are walked only for identities of that tenant.
	rm := defaultrolemanager.NewRoleManagerImpl(maxRoleDepth + 1)
	inTenant := map[string]map[string][]string{} // tenant → member → roles
	isRole := map[string]bool{}
	firstGrant := map[string]Grant{}
	tenantGrant := map[string]Grant{}
	var problems []string
	for _, g := range p.Grants {
		if g.Tenant == "" {
			if err := rm.AddLink(g.Member, g.Role); err != nil {
				return err
			}
		} else {
			if inTenant[g.Tenant] == nil {
				inTenant[g.Tenant] = map[string][]string{}
			}
			inTenant[g.Tenant][g.Member] = append(inTenant[g.Tenant][g.Member], g.Role)
		}
		p.known[g.Member], p.known[g.Role] = true, true
		isRole[g.Role] = true
		if _, ok := firstGrant[g.Member]; !ok {
			firstGrant[g.Member] = g
		}
	}
	for name := range p.known {
		if !isRole[name] {
			p.identities[name] = true
		}
	}
	for _, g := range p.Grants {
		if g.Tenant == "" || !p.identities[g.Member] {
			continue
		}
		if prev, ok := tenantGrant[g.Member]; ok && prev.Tenant != g.Tenant {
			problems = append(problems, fmt.Sprintf("%s:%d: %q is granted roles in tenant %q here and in tenant %q on line %d; an identity belongs to one tenant",
				g.File, g.Line, g.Member, g.Tenant, prev.Tenant, prev.Line))
			continue
		}
		tenantGrant[g.Member] = g
		p.tenantOf[g.Member] = g.Tenant
	}
	if len(problems) > 0 {
		return &LoadError{problems}
	}
	global := map[string][]string{}
	for name := range p.known {
		global[name], _ = rm.GetRoles(name) // direct roles of name, everywhere
	}
	parentsIn := func(name, tenant string) []string {
		if tenant == "" || len(inTenant[tenant][name]) == 0 {
			return global[name]
		}
		return append(slices.Clip(global[name]), inTenant[tenant][name]...)
	}
	if err := p.checkRoleGraph(parentsIn, firstGrant, inTenant); err != nil {
		return err
	}
	p.scopes = map[string]map[string]bool{}
	for name := range p.known {
		tenant := p.tenantOf[name]
		for tool, subjects := range p.byTool {
			has := func(s string) bool {
				for _, r := range subjects[s] {
					if r.appliesIn(tenant) {
						return true
					}
				}
				return false
			}
			level, seen := []string{name}, map[string]bool{name: true}
			for len(level) > 0 {
				var found, next []string
				for _, s := range level {
					if has(s) {
						found = append(found, s)
					}
					for _, parent := range parentsIn(s, tenant) {
						if !seen[parent] {
							seen[parent] = true
							next = append(next, parent)
						}
					}
				}
				if len(found) > 0 {
					set := map[string]bool{}
					for _, s := range found {
						set[s] = true
					}
					p.scopes[name+"\x00"+tool] = set
					break
				}
				level = next
			}
		}
	}
	return nil
}

// checkRoleGraph refuses cycles and chains deeper than maxRoleDepth, naming
// the grant line where the problem starts.
func (p *Policy) checkRoleGraph(parentsIn func(name, tenant string) []string, firstGrant map[string]Grant, inTenant map[string]map[string][]string) error {
	tenants := []string{""}
	for t := range inTenant {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	var problems []string
	for _, tenant := range tenants {
		problems = append(problems, p.checkRoleGraphIn(func(n string) []string { return parentsIn(n, tenant) }, firstGrant)...)
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return &LoadError{slices.Compact(problems)}
	}
	return nil
}

// checkRoleGraphIn walks the role graph as one tenant sees it.
func (p *Policy) checkRoleGraphIn(parentsOf func(string) []string, firstGrant map[string]Grant) []string {
	var problems []string
	state := map[string]int{} // 0 unvisited, 1 on the current path, 2 done
	depth := map[string]int{} // longest chain above a name
	var visit func(name string, path []string) int
	visit = func(name string, path []string) int {
		switch state[name] {
		case 1:
			g := firstGrant[name]
			cycle := append(path[slices.Index(path, name):], name)
			problems = append(problems, fmt.Sprintf("%s:%d: role cycle: %s", g.File, g.Line, strings.Join(cycle, " → ")))
			return 0
		case 2:
			return depth[name]
		}
		state[name] = 1
		longest := 0
		for _, parent := range parentsOf(name) {
			if d := visit(parent, append(path, name)) + 1; d > longest {
				longest = d
			}
		}
		state[name], depth[name] = 2, longest
		return longest
	}
	names := make([]string, 0, len(p.known))
	for n := range p.known {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if visit(n, nil) > maxRoleDepth {
			if g, ok := firstGrant[n]; ok && p.identities[n] {
				problems = append(problems, fmt.Sprintf("%s:%d: the role chain from %q is %d links deep; the limit is %d", g.File, g.Line, n, depth[n], maxRoleDepth))
			}
		}
	}
	return problems
}

// A shard is a Casbin enforcer holding exactly the rules that can apply to
// one set of subjects for one tool: the index that keeps a decision to one
// Enforce over a handful of rules however large the policy is. grant[i]
// says whether rule i can grant (any rule of the identity's scope, or an
// allow for *); rules for * that deny or escalate only restrict.
type shard struct {
	e     *casbin.Enforcer
	rules []*Rule
	byRow map[string]*Rule // Casbin's row (without tenant) → the rule
	grant []bool
	conds []*govaluate.EvaluableExpression // rules[i]'s compiled condition, for decideDirect
}

// shardOf is shardFor through a cache keyed by identity and tool, so a
// decision finds its shard without allocating.
func (p *Policy) shardOf(agent, tool string) (*shard, error) {
	k := agentTool{agent, tool}
	p.cacheMu.RLock()
	sh := p.cache[k]
	p.cacheMu.RUnlock()
	if sh != nil {
		return sh, nil
	}
	sh, err := p.shardFor(agent, tool)
	if err != nil {
		return nil, err
	}
	p.cacheMu.Lock()
	if p.cache == nil {
		p.cache = map[agentTool]*shard{}
	}
	p.cache[k] = sh
	p.cacheMu.Unlock()
	return sh, nil
}

// shardFor returns the shard for agent's scope on tool, building it on
// first use. Identities with the same scope share it.
func (p *Policy) shardFor(agent, tool string) (*shard, error) {
	scope := p.scopes[agent+"\x00"+tool]
	subjects := make([]string, 0, len(scope)+1)
	for s := range scope {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	tenant := p.tenantOf[agent]
	key := tenant + "\x00" + tool + "\x00" + strings.Join(subjects, "\x00")
	if sh, ok := p.shards.Load(key); ok {
		return sh.(*shard), nil
	}
	var rules []*Rule
	for _, s := range append(subjects, "*") {
		for _, r := range p.byTool[tool][s] {
			if r.appliesIn(tenant) {
				rules = append(rules, r)
			}
		}
	}
	// File order, so "the first match" means the same here as in Explain.
	slices.SortFunc(rules, func(a, b *Rule) int { return a.Line - b.Line })
	sh, err := p.newShard(rules)
	if err != nil {
		return nil, err
	}
	actual, _ := p.shards.LoadOrStore(key, sh)
	return actual.(*shard), nil
}

func (p *Policy) newShard(rules []*Rule) (*shard, error) {
	m, err := model.NewModelFromString(p.modelText)
	if err != nil {
		return nil, err
	}
	e, err := casbin.NewEnforcer(m)
	if err != nil {
		return nil, err
	}
	grant := make([]bool, len(rules))
	rows := make([][]string, len(rules))
	byRow := make(map[string]*Rule, len(rules))
	for i, r := range rules {
		rows[i] = r.row()
		grant[i] = r.Subject != "*" || r.Effect == Allow
		if _, dup := byRow[strings.Join(rows[i], "\x00")]; !dup {
			byRow[strings.Join(rows[i], "\x00")] = r
		}
	}
	e.SetEffector(mostRestrictive{grant: grant})
	e.AddFunction("applies", p.applies)
	e.AddFunction("cond", p.cond)
	if len(rows) > 0 {
		// Rows are added to the model directly: Casbin's AddPolicies would
		// also build role links and check each row for duplicates, which
		// Load has already done.
		for _, row := range rows {
			e.GetModel()["p"]["p"].Policy = append(e.GetModel()["p"]["p"].Policy, row)
		}
	}
	conds := make([]*govaluate.EvaluableExpression, len(rules))
	for i, r := range rules {
		conds[i] = p.conds[r.Cond]
	}
	return &shard{e: e, rules: rules, byRow: byRow, grant: grant, conds: conds}, nil
}

// applies(identity, tool, subject) says whether a rule's subject speaks for
// the identity on this tool. Shards hold only such rules; the function is
// there for matchers that test it and for Explain.
func (p *Policy) applies(args ...any) (any, error) {
	if len(args) != 3 {
		return nil, errors.New("applies takes (r.sub, r.tool, p.sub)")
	}
	sub, _ := args[0].(string)
	tool, _ := args[1].(string)
	subject, _ := args[2].(string)
	if subject == "*" {
		return p.identities[sub], nil
	}
	return p.scopes[sub+"\x00"+tool][subject], nil
}

// cond(condition, attrs) evaluates a condition compiled at load. A missing
// attribute or a type error is an error, and an error is a deny.
func (p *Policy) cond(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("cond takes (p.cond, r.attrs)")
	}
	text, _ := args[0].(string)
	attrs, _ := args[1].(map[string]any)
	expr, ok := p.conds[text]
	if !ok {
		return nil, fmt.Errorf("condition %q was not compiled at load", text)
	}
	out, err := expr.Evaluate(attrs)
	if err != nil {
		return nil, err
	}
	b, ok := out.(bool)
	if !ok {
		return nil, fmt.Errorf("condition %q gave %v, not true or false", text, out)
	}
	return b, nil
}

// Decide returns the decision for req. It never fails open: an unknown
// identity or tool, nothing granting the action, or any evaluation error is
// a deny.
func (p *Policy) Decide(req Request) Decision {
	deny := func(reason string) Decision {
		return Decision{Effect: Deny, Reason: reason, Version: p.Version}
	}
	if _, ok := Tools[req.Tool]; !ok {
		return deny(fmt.Sprintf("unknown tool %q", req.Tool))
	}
	if req.Agent == "" || !p.identities[req.Agent] {
		return deny(fmt.Sprintf("unknown identity %q", req.Agent))
	}
	sh, err := p.shardOf(req.Agent, req.Tool)
	if err != nil {
		return deny("policy error: " + err.Error())
	}
	if len(sh.rules) == 0 {
		return deny("no rule matched: none for " + req.Tool + " applies to " + req.Agent)
	}
	if p.direct {
		return p.decideDirect(sh, req)
	}
	return p.decideCasbin(sh, req)
}

// decideCasbin decides req with Casbin's Enforce over the shard's rules.
func (p *Policy) decideCasbin(sh *shard, req Request) Decision {
	deny := func(reason string) Decision {
		return Decision{Effect: Deny, Reason: reason, Version: p.Version}
	}
	_, explain, err := sh.e.EnforceEx(req.Agent, req.Tool, req.Attrs)
	if err != nil {
		return deny("policy error: " + err.Error())
	}
	if len(explain) == 0 {
		return deny("no rule matched that grants this")
	}
	rule, ok := sh.byRow[strings.Join(explain, "\x00")]
	if !ok {
		return deny("matched a rule the policy does not hold")
	}
	return Decision{Effect: rule.Effect, Rule: rule, Version: p.Version}
}

// decideDirect is what Casbin's Enforce does with the shipped matcher and
// the mostRestrictive effector, without its per-call allocations: evaluate
// each rule's condition in file order, stop at the first matching deny (an
// error before it is a deny, as in Casbin), else, if a matching rule grants,
// the first matching require_approval, else the first matching allow.
func (p *Policy) decideDirect(sh *shard, req Request) Decision {
	approval, allow, granted := -1, -1, false
	for j, r := range sh.rules {
		out, err := sh.conds[j].Evaluate(req.Attrs)
		if err != nil {
			return Decision{Effect: Deny, Reason: "policy error: " + err.Error(), Version: p.Version}
		}
		matched, ok := out.(bool)
		if !ok {
			return Decision{Effect: Deny, Reason: fmt.Sprintf("policy error: condition %q gave %v, not true or false", r.Cond, out), Version: p.Version}
		}
		if !matched {
			continue
		}
		switch r.Effect {
		case Deny:
			return Decision{Effect: Deny, Rule: r, Version: p.Version}
		case RequireApproval:
			if approval < 0 {
				approval = j
			}
		case Allow:
			if allow < 0 {
				allow = j
			}
		}
		granted = granted || sh.grant[j]
	}
	switch {
	case !granted:
		return Decision{Effect: Deny, Reason: "no rule matched that grants this", Version: p.Version}
	case approval >= 0:
		return Decision{Effect: RequireApproval, Rule: sh.rules[approval], Version: p.Version}
	case allow >= 0:
		return Decision{Effect: Allow, Rule: sh.rules[allow], Version: p.Version}
	}
	return Decision{Effect: Deny, Reason: "no rule matched that grants this", Version: p.Version}
}

// TenantOf returns the tenant an identity belongs to, or "".
func (p *Policy) TenantOf(identity string) string { return p.tenantOf[identity] }

// IsIdentity reports whether name can act: it is named in the policy and is
// nobody's role.
func (p *Policy) IsIdentity(name string) bool { return p.identities[name] }

// mostRestrictive is the Casbin effector for three-valued decisions: any
// matching deny wins at once; otherwise, if some matching rule grants the
// action, the first matching require_approval (which Casbin reports as
// Indeterminate), else the first matching allow; otherwise a deny. A rule
// for * that escalates restricts what a grant allows but grants nothing by
// itself, so an identity with no rights cannot ask for an action.
type mostRestrictive struct{ grant []bool }

func (m mostRestrictive) MergeEffects(_ string, effects []effector.Effect, matches []float64, i, n int) (effector.Effect, int, error) {
	if matches[i] != 0 && effects[i] == effector.Deny {
		return effector.Deny, i, nil
	}
	if i < n-1 {
		return effector.Indeterminate, -1, nil
	}
	granted := false
	for j := 0; j < n; j++ {
		if matches[j] != 0 && j < len(m.grant) && m.grant[j] {
			granted = true
			break
		}
	}
	if !granted {
		return effector.Deny, -1, nil
	}
	for _, want := range []effector.Effect{effector.Indeterminate, effector.Allow} {
		for j := 0; j < n; j++ {
			if matches[j] != 0 && effects[j] == want {
				return want, j, nil
			}
		}
	}
	return effector.Deny, -1, nil
}
