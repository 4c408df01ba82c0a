package policy

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Explanation is why a request got its decision: every rule for the tool,
// whether it applies to the identity and whether its condition held, and
// which one won and why.
type Explanation struct {
	Request  Request
	Decision Decision // as Decide gives it
	// Scope lists the subjects whose rules apply to the identity for this
	// tool: its own, or its nearest roles' that have rules for the tool,
	// plus * (see buildScopes).
	Scope []string
	Rules []RuleResult
	Why   string
}

// RuleResult is one rule for the requested tool and how it fared.
type RuleResult struct {
	Rule    *Rule
	Applies bool   // the rule's subject speaks for the identity on this tool
	Matched bool   // Applies and the condition held
	Err     string // the condition could not be evaluated
	Won     bool
	// Skipped is true for rules after a matching deny: the decision was
	// already made, so they were not evaluated.
	Skipped bool
	// Note says, for a rule that does not apply, why not.
	Note string
}

// Explain decides req and says why. It walks the tool's rules in file order
// the way the matcher and the most-restrictive effector do; the decision it
// reports is always Decide's, and Why says so if the two ever disagree (an
// admin-edited matcher).
func (p *Policy) Explain(req Request) Explanation {
	dec := p.Decide(req)
	ex := Explanation{Request: req, Decision: dec}
	if _, ok := Tools[req.Tool]; !ok || req.Agent == "" || !p.identities[req.Agent] {
		ex.Why = "denied before any rule: " + dec.Reason
		return ex
	}
	for s := range p.scopes[req.Agent+"\x00"+req.Tool] {
		ex.Scope = append(ex.Scope, s)
	}
	sort.Strings(ex.Scope)
	ex.Scope = append(ex.Scope, "*")

	var winner *RuleResult
	var stopped bool
	var evalErr string
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Tool != req.Tool {
			continue
		}
		res := RuleResult{Rule: r}
		if stopped {
			res.Skipped = true
			res.Note = "a deny already matched"
			if evalErr != "" {
				res.Note = "an error already decided (deny)"
			}
			ex.Rules = append(ex.Rules, res)
			continue
		}
		applies, _ := p.applies(req.Agent, req.Tool, r.Subject)
		res.Applies, _ = applies.(bool)
		if res.Applies && !r.appliesIn(p.tenantOf[req.Agent]) {
			res.Applies = false
			res.Note = "a rule for tenant " + r.Tenant + "; " + req.Agent + " is not in it"
			ex.Rules = append(ex.Rules, res)
			continue
		}
		if !res.Applies {
			res.Note = p.whyNot(req.Agent, req.Tool, r.Subject)
			ex.Rules = append(ex.Rules, res)
			continue
		}
		out, err := p.cond(r.Cond, req.Attrs)
		if err != nil {
			res.Err = err.Error()
			evalErr = fmt.Sprintf("%s:%d: %v", r.File, r.Line, err)
			stopped = true // Casbin stops at the first error and denies
			ex.Rules = append(ex.Rules, res)
			continue
		}
		res.Matched, _ = out.(bool)
		ex.Rules = append(ex.Rules, res)
		if res.Matched && r.Effect == Deny {
			stopped = true
		}
	}

	switch {
	case evalErr != "":
		ex.Why = "a condition could not be evaluated (" + evalErr + "), and any error is a deny"
	case len(ex.Rules) == 0:
		ex.Why = "no rule mentions " + req.Tool + ", so it is denied"
	default:
		for _, want := range []string{Deny, RequireApproval, Allow} {
			for i := range ex.Rules {
				if ex.Rules[i].Matched && ex.Rules[i].Rule.Effect == want {
					winner = &ex.Rules[i]
					break
				}
			}
			if winner != nil {
				break
			}
		}
		if winner == nil {
			ex.Why = "no rule that applies to " + req.Agent + " matched, so it is denied"
			break
		}
		granted := false
		for _, r := range ex.Rules {
			if r.Matched && (r.Rule.Subject != "*" || r.Rule.Effect == Allow) {
				granted = true
			}
		}
		if !granted && winner.Rule.Effect != Deny {
			ex.Why = fmt.Sprintf("only rules for * matched (%s:%d), and a * rule that escalates only restricts what some other rule grants; nothing grants this to %s, so it is denied",
				winner.Rule.File, winner.Rule.Line, req.Agent)
			winner = nil
			break
		}
		winner.Won = true
		others, skipped := 0, 0
		for _, r := range ex.Rules {
			if r.Matched && !r.Won {
				others++
			}
			if r.Skipped {
				skipped++
			}
		}
		switch {
		case winner.Rule.Effect == Deny && others+skipped > 0:
			ex.Why = fmt.Sprintf("%s:%d is a deny, and a matching deny always wins (later rules are not evaluated)", winner.Rule.File, winner.Rule.Line)
		case others == 0:
			ex.Why = fmt.Sprintf("only %s:%d matched", winner.Rule.File, winner.Rule.Line)
		default:
			ex.Why = fmt.Sprintf("%s:%d is the first match with the most restrictive effect among %d matches (deny > require_approval > allow)",
				winner.Rule.File, winner.Rule.Line, others+1)
		}
	}
	var got *Rule
	if winner != nil {
		got = winner.Rule
	}
	effect := Deny
	if got != nil {
		effect = got.Effect
	}
	if effect != dec.Effect || got != dec.Rule {
		ex.Why += fmt.Sprintf("; note: the model's matcher decided %s (%s), which differs from this walk of the rules", dec.Effect, dec.RuleText())
	}
	return ex
}

// whyNot says why a rule's subject does not speak for agent on tool.
func (p *Policy) whyNot(agent, tool, subject string) string {
	scope := p.scopes[agent+"\x00"+tool]
	if len(scope) == 0 {
		return fmt.Sprintf("%s is not %s and does not have that role", agent, subject)
	}
	var names []string
	for s := range scope {
		names = append(names, s)
	}
	sort.Strings(names)
	if p.HasRole(agent, subject) {
		return fmt.Sprintf("%s has %s, but the rules of %s for %s replace those it inherits", agent, subject, strings.Join(names, " and "), tool)
	}
	return fmt.Sprintf("%s is not %s and does not have that role", agent, subject)
}

// AuditorRole is the role, granted with `g, NAME, auditor`, that lets a
// person read the audit trail in the admin page and nothing else. It has
// no rules by design: package auth gives it its meaning (auth.RoleOf), and
// Lint does not take it for a typo. It lives here so that both can name it.
const AuditorRole = "auditor"

// HasRole reports whether name reaches role through g lines, in its own
// tenant or in every tenant.
func (p *Policy) HasRole(name, role string) bool {
	tenant := p.TenantOf(name)
	seen := map[string]bool{name: true}
	level := []string{name}
	for len(level) > 0 {
		var next []string
		for _, n := range level {
			for _, g := range p.Grants {
				if g.Member != n || seen[g.Role] || (g.Tenant != "" && g.Tenant != tenant) {
					continue
				}
				if g.Role == role {
					return true
				}
				seen[g.Role] = true
				next = append(next, g.Role)
			}
		}
		level = next
	}
	return false
}

// String renders the explanation for a terminal.
func (ex Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "decision: %s\n", ex.Decision.Effect)
	fmt.Fprintf(&b, "rule:     %s\n", ex.Decision.RuleText())
	fmt.Fprintf(&b, "why:      %s\n", ex.Why)
	fmt.Fprintf(&b, "policy:   %s\n", ex.Decision.Version)
	if len(ex.Scope) > 0 {
		fmt.Fprintf(&b, "rules of: %s (for %s on %s)\n", strings.Join(ex.Scope, ", "), ex.Request.Agent, ex.Request.Tool)
	}
	if len(ex.Request.Attrs) > 0 {
		b.WriteString("attributes:\n")
		keys := make([]string, 0, len(ex.Request.Attrs))
		for k := range ex.Request.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %s = %s\n", k, formatAttr(ex.Request.Attrs[k]))
		}
	}
	if len(ex.Rules) > 0 {
		b.WriteString("rules for " + ex.Request.Tool + ":\n")
	}
	for _, r := range ex.Rules {
		mark := "  "
		status := ""
		switch {
		case r.Won:
			mark, status = "=>", "matched, won"
		case r.Skipped:
			status = "not evaluated: " + r.Note
		case r.Err != "":
			status = "error: " + r.Err
		case r.Matched:
			status = "matched"
		case r.Applies:
			status = "condition false"
		default:
			status = "does not apply: " + r.Note
		}
		fmt.Fprintf(&b, "%s %s\n     %s\n", mark, r.Rule, status)
	}
	return b.String()
}

func formatAttr(v any) string {
	switch v := v.(type) {
	case string:
		return "'" + v + "'"
	case float64:
		// Shown to the cent; conditions see the exact value.
		return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
