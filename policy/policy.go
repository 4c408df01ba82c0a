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

	byKey  map[string]*Rule
	conds  map[string]*govaluate.EvaluableExpression
	shards map[string]*casbin.Enforcer // one enforcer per tool, holding only that tool's rules
	scopes map[string]map[string]bool  // identity + "\x00" + tool → subjects whose rules apply
	known  map[string]bool             // every identity and role named in the policy
}

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
		Version: Version(modelSrc.Data, policySrc.Data),
		Rules:   parsed.rules,
		Grants:  parsed.grants,
		byKey:   map[string]*Rule{},
		conds:   parsed.conds,
		shards:  map[string]*casbin.Enforcer{},
		known:   map[string]bool{},
	}
	byTool := map[string][][]string{}
	for i := range p.Rules {
		r := &p.Rules[i]
		p.byKey[strings.Join([]string{r.Subject, r.Tool, r.Cond, r.Effect}, "\x00")] = r
		byTool[r.Tool] = append(byTool[r.Tool], []string{r.Subject, r.Tool, r.Cond, r.Effect})
		if r.Subject != "*" {
			p.known[r.Subject] = true
		}
	}
	if err := p.buildScopes(); err != nil {
		return nil, err
	}
	for tool, rows := range byTool {
		e, err := p.newShard(string(modelSrc.Data), rows)
		if err != nil {
			return nil, &LoadError{[]string{fmt.Sprintf("%s: %v", modelSrc.Name, err)}}
		}
		p.shards[tool] = e
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
// inherits for that tool). Rules for * are added at decision time.
func (p *Policy) buildScopes() error {
	rm := defaultrolemanager.NewRoleManagerImpl(maxRoleDepth + 1)
	for _, g := range p.Grants {
		if err := rm.AddLink(g.Member, g.Role); err != nil {
			return err
		}
		p.known[g.Member], p.known[g.Role] = true, true
	}
	hasRules := map[string]map[string]bool{}
	for _, r := range p.Rules {
		if hasRules[r.Tool] == nil {
			hasRules[r.Tool] = map[string]bool{}
		}
		hasRules[r.Tool][r.Subject] = true
	}
	p.scopes = map[string]map[string]bool{}
	var problems []string
	for name := range p.known {
		for tool := range hasRules {
			level, seen := []string{name}, map[string]bool{name: true}
			for depth := 0; len(level) > 0; depth++ {
				if depth > maxRoleDepth {
					problems = append(problems, fmt.Sprintf("role chain from %q is deeper than %d or has a cycle", name, maxRoleDepth))
					break
				}
				var found []string
				var next []string
				for _, s := range level {
					if hasRules[tool][s] {
						found = append(found, s)
					}
					parents, _ := rm.GetRoles(s) // direct roles of s
					for _, parent := range parents {
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
	if len(problems) > 0 {
		slices.Sort(problems)
		return &LoadError{slices.Compact(problems)}
	}
	return nil
}

func (p *Policy) newShard(modelText string, rows [][]string) (*casbin.Enforcer, error) {
	m, err := model.NewModelFromString(modelText)
	if err != nil {
		return nil, err
	}
	e, err := casbin.NewEnforcer(m)
	if err != nil {
		return nil, err
	}
	e.SetEffector(mostRestrictive{})
	e.AddFunction("applies", p.applies)
	e.AddFunction("cond", p.cond)
	if _, err := e.AddPolicies(rows); err != nil {
		return nil, err
	}
	return e, nil
}

// applies(identity, tool, subject) is the matcher function that says whether
// a rule's subject speaks for the identity on this tool.
func (p *Policy) applies(args ...any) (any, error) {
	if len(args) != 3 {
		return nil, errors.New("applies takes (r.sub, r.tool, p.sub)")
	}
	sub, _ := args[0].(string)
	tool, _ := args[1].(string)
	subject, _ := args[2].(string)
	if subject == "*" {
		return p.known[sub], nil
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
// identity or tool, a tool without rules, or any evaluation error is a deny.
func (p *Policy) Decide(req Request) Decision {
	deny := func(reason string) Decision {
		return Decision{Effect: Deny, Reason: reason, Version: p.Version}
	}
	if _, ok := Tools[req.Tool]; !ok {
		return deny(fmt.Sprintf("unknown tool %q", req.Tool))
	}
	if req.Agent == "" || !p.known[req.Agent] {
		return deny(fmt.Sprintf("unknown identity %q", req.Agent))
	}
	shard, ok := p.shards[req.Tool]
	if !ok {
		return deny("no rule mentions " + req.Tool)
	}
	_, explain, err := shard.EnforceEx(req.Agent, req.Tool, req.Attrs)
	if err != nil {
		return deny("policy error: " + err.Error())
	}
	if len(explain) == 0 {
		return deny("no rule matched")
	}
	rule, ok := p.byKey[strings.Join(explain, "\x00")]
	if !ok {
		return deny("matched a rule the policy does not hold")
	}
	return Decision{Effect: rule.Effect, Rule: rule, Version: p.Version}
}

// Known reports whether name appears in the policy as an identity or role.
func (p *Policy) Known(name string) bool { return p.known[name] }

// mostRestrictive is the Casbin effector for three-valued decisions: any
// matching deny wins at once; otherwise the first matching require_approval
// (which Casbin reports as Indeterminate), else the first matching allow;
// nothing matching is a deny.
type mostRestrictive struct{}

func (mostRestrictive) MergeEffects(_ string, effects []effector.Effect, matches []float64, i, n int) (effector.Effect, int, error) {
	if matches[i] != 0 && effects[i] == effector.Deny {
		return effector.Deny, i, nil
	}
	if i < n-1 {
		return effector.Indeterminate, -1, nil
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
