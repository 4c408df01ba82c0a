package policy

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Lint looks for what loads but cannot be what the admin meant:
//
//   - a rule subject in no g line (a role nobody has, or a misspelt name);
//   - an identity or role that no rule reaches, only * rules;
//   - a rule whose condition is false for every probed value (never matches);
//   - a rule always overridden: another rule for the same subject or for *,
//     with a more restrictive effect, matches whenever it does;
//   - a rule that applies to no identity because every holder of its role
//     replaces it with rules of its own (a warning), and, as notes, each
//     member role that replaces it for itself (often intended: a senior
//     role's wider limits);
//   - a rule for * that allows an action or an approval: every identity,
//     approvers and agents alike, gets it;
//   - identity and role names that hide characters or that people could
//     take for another name in the policy (mandate.NameProblem, Skeleton);
//   - a comparison of a text attribute with a value no fact ever takes
//     (AttrValues): order_status == 'shipped ' never holds;
//   - an identity that can both use an action tool and approve actions.
//
// Conditions are compared by probing, not proved: each attribute a
// condition uses takes values around every number literal in it (c-1,
// c-0.01, c, c+0.01, c+1, and 0, 1, -1, 10^9) and every text literal plus
// the known values (statuses, fields, currencies). Conditions built from
// comparisons with constants, && and || are judged exactly; anything else
// may be missed, never flagged wrongly by accident of a near value.
//
// Lint is linear in the size of the policy: rules are compared only with
// the rules of their own tool and subject and the tool's rules for *, at
// most maxCompare of them, and every answer about a condition is kept by
// its text. It returns ctx's error, and no findings, when ctx is done.
func (p *Policy) Lint(ctx context.Context) ([]Finding, error) {
	l, err := p.lint(ctx)
	if err != nil {
		return nil, err
	}
	return l.out, nil
}

// lint runs every check and returns the linter, whose prober counts the
// conditions evaluated (for the test that keeps Lint linear).
func (p *Policy) lint(ctx context.Context) (*linter, error) {
	l := &linter{p: p, ctx: ctx, pr: newProber(p.conds), isRole: map[string]bool{}, firstGrant: map[string]Grant{}}
	for _, g := range p.Grants {
		l.isRole[g.Role] = true
		for _, n := range []string{g.Member, g.Role} {
			if _, ok := l.firstGrant[n]; !ok {
				l.firstGrant[n] = g
			}
		}
	}
	// The conditions, most of the work, are judged on every CPU while the
	// other checks run.
	type judged struct {
		out   []Finding
		evals int
		err   error
	}
	conds := make(chan judged, 1)
	go func() {
		out, evals, err := l.conditions()
		conds <- judged{out, evals, err}
	}()
	var err error
	for _, check := range []func() error{
		l.subjects, l.unreached, l.cycles, l.replaced,
		l.starAllows, l.names, l.values, l.twoHats,
	} {
		if err = check(); err != nil {
			break
		}
	}
	j := <-conds
	if err == nil {
		err = j.err
	}
	if err != nil {
		return nil, err
	}
	l.out = append(l.out, j.out...)
	l.pr.evals += j.evals
	sortFindings(l.out)
	return l, nil
}

// maxCompare bounds how many more restrictive rules one rule is compared
// with, so that a subject with thousands of rules for one tool costs
// thousands of comparisons per rule at most, not a square of its rules.
const maxCompare = 200

// maxNotes bounds the notes written about one role rule.
const maxNotes = 3

// linter holds what the checks of one Lint share.
type linter struct {
	p          *Policy
	ctx        context.Context
	pr         *prober
	out        []Finding
	work       int
	isRole     map[string]bool
	firstGrant map[string]Grant
}

func (l *linter) add(file string, line int, sev, format string, args ...any) {
	l.out = append(l.out, Finding{File: file, Line: line, Severity: sev, Message: fmt.Sprintf(format, args...)})
}

// tick counts a unit of work and, every so often, says whether to stop.
func (l *linter) tick() error {
	l.work++
	if l.work%512 == 0 {
		return l.ctx.Err()
	}
	return nil
}

func (l *linter) kind(name string) string {
	switch {
	case l.isRole[name]:
		return "role"
	case l.p.identities[name]:
		return "identity"
	}
	return "subject"
}

// subjects: a rule subject that is in no g line.
func (l *linter) subjects() error {
	warned := map[string]bool{}
	for _, r := range l.p.Rules {
		if r.Subject != "*" && l.firstGrant[r.Subject].Line == 0 && !warned[r.Subject] {
			warned[r.Subject] = true
			l.add(r.File, r.Line, SevWarning, "%q has rules but is in no g line: if it is a role, nobody has it (ignore this if it is an identity with rules of its own)", r.Subject)
		}
	}
	return l.ctx.Err()
}

// unreached: an identity or role whose name and roles reach no rule.
func (l *linter) unreached() error {
	reached := map[string]bool{}
	for key, set := range l.p.scopes {
		if len(set) > 0 {
			name, _, _ := strings.Cut(key, "\x00")
			reached[name] = true
		}
	}
	names := make([]string, 0, len(l.firstGrant))
	for n := range l.firstGrant {
		names = append(names, n)
	}
	sort.Strings(names)
	// A role's scope above is worked out outside any tenant, so a role
	// whose rules (or whose parents' rules) are all of one tenant would
	// look unreached: a role counts as reached when it or a role it holds,
	// in any tenant, has rules.
	hasRules := map[string]bool{}
	for i := range l.p.Rules {
		hasRules[l.p.Rules[i].Subject] = true
	}
	parents := map[string][]string{}
	for _, g := range l.p.Grants {
		parents[g.Member] = append(parents[g.Member], g.Role)
	}
	// reaches reports whether n or a role it holds, in any tenant, is
	// one that found reports.
	reaches := func(n string, found func(string) bool) bool {
		seen, level := map[string]bool{n: true}, []string{n}
		for len(level) > 0 {
			var next []string
			for _, s := range level {
				if found(s) {
					return true
				}
				for _, p := range parents[s] {
					if !seen[p] {
						seen[p] = true
						next = append(next, p)
					}
				}
			}
			level = next
		}
		return false
	}
	for _, n := range names {
		if reached[n] || (l.isRole[n] && reaches(n, func(s string) bool { return hasRules[s] })) {
			continue
		}
		g := l.firstGrant[n]
		switch {
		case n == AuditorRole:
			// Its meaning is in the admin page, not in rules.
			l.add(g.File, g.Line, SevNote, "role %q has no rules, by design: its members may read the audit trail in the admin page and nothing else", n)
		case reaches(n, func(s string) bool { return s == AuditorRole }):
			// An auditor, or a role of auditors: no rules is what it should have.
		default:
			l.add(g.File, g.Line, SevWarning, "%s %q reaches no rules through its name or roles, only the rules for *: check the role names for a typo", l.kind(n), n)
		}
	}
	return l.ctx.Err()
}

// cycles: Mandate's own role walk stops at names it has seen, so a cycle
// loads, but it is always a mistake.
func (l *linter) cycles() error {
	for _, c := range grantCycles(l.p.Grants) {
		l.add(c[0].File, c[0].Line, SevWarning, "role cycle: %s", cycleText(c))
	}
	return l.ctx.Err()
}

// conditions: rules that never match, and rules always overridden by a
// more restrictive rule of the same subject or of *.
//
// Rules are judged in contiguous runs on every CPU, each with its own
// prober, as Load compiles conditions in parallel.
func (l *linter) conditions() ([]Finding, int, error) {
	workers := runtime.GOMAXPROCS(0)
	n := len(l.p.Rules)
	parts := make([]*linter, workers)
	skips := make([]int, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		part := &linter{p: l.p, ctx: l.ctx, pr: newProber(l.p.conds), isRole: l.isRole, firstGrant: l.firstGrant}
		parts[w] = part
		wg.Add(1)
		go func() {
			defer wg.Done()
			skips[w], errs[w] = part.conditionsIn(w*n/workers, (w+1)*n/workers)
		}()
	}
	wg.Wait()
	var out []Finding
	skipped, evals := 0, 0
	for w, part := range parts {
		if errs[w] != nil {
			return nil, 0, errs[w]
		}
		out = append(out, part.out...)
		evals += part.pr.evals
		skipped += skips[w]
	}
	if skipped > 0 {
		out = append(out, Finding{File: l.p.Rules[0].File, Severity: SevNote, Message: fmt.Sprintf(
			"%d rules were compared with only the first %d more restrictive rules of their subject and of * for their tool: so many rules for one subject and tool are hard to review", skipped, maxCompare)})
	}
	return out, evals, nil
}

// conditionsIn judges rules lo to hi-1, returning how many were not
// compared with every more restrictive rule (maxCompare).
func (l *linter) conditionsIn(lo, hi int) (int, error) {
	skipped := 0
	for i := lo; i < hi; i++ {
		if err := l.tick(); err != nil {
			return 0, err
		}
		r := &l.p.Rules[i]
		never, ok := l.pr.neverTrue(r.Cond)
		if !ok {
			continue
		}
		if r.Cond != "true" && never {
			l.add(r.File, r.Line, SevWarning, "condition %q is false for every value probed: this rule never matches", r.Cond)
			continue
		}
		own := l.p.byTool[r.Tool][r.Subject]
		var all []*Rule
		if r.Subject != "*" {
			all = l.p.byTool[r.Tool]["*"]
		}
		// Walk both groups in file order, so that the first rule found is
		// the earliest that overrides this one.
		compared := 0
		for a, b := 0, 0; a < len(own) || b < len(all); {
			var o *Rule
			if b >= len(all) || a < len(own) && own[a].Line < all[b].Line {
				o, a = own[a], a+1
			} else {
				o, b = all[b], b+1
			}
			if o == r || restrictiveness[o.Effect] <= restrictiveness[r.Effect] {
				continue
			}
			if o.Tenant != "" && o.Tenant != r.Tenant {
				continue // o does not apply everywhere r does
			}
			if compared++; compared > maxCompare {
				skipped++
				break
			}
			if err := l.tick(); err != nil {
				return 0, err
			}
			if l.pr.implies(r.Cond, o.Cond) {
				l.add(r.File, r.Line, SevWarning, "always overridden by line %d (p, %s, %s, %s, %s%s), which matches whenever this rule does and is more restrictive",
					o.Line, o.Subject, o.Tool, o.Cond, o.Effect, tenantSuffix(o.Tenant))
				break
			}
		}
	}
	return skipped, nil
}

// replaced: a role rule that reaches no identity because every holder has
// nearer rules for the tool (a warning), and each member that replaces it
// (notes, at most maxNotes per rule).
func (l *linter) replaced() error {
	type toolSubject struct{ tool, subject string }
	applied := map[toolSubject]bool{} // some identity's scope holds the subject's rules for the tool
	for key, set := range l.p.scopes {
		name, tool, _ := strings.Cut(key, "\x00")
		if l.isRole[name] {
			continue
		}
		for s := range set {
			applied[toolSubject{tool, s}] = true
		}
	}
	byRole := map[string][]Grant{}
	for _, g := range l.p.Grants {
		byRole[g.Role] = append(byRole[g.Role], g)
	}
	replacers := map[toolSubject][]Grant{} // a role's members with rules of their own for the tool
	for i := range l.p.Rules {
		if err := l.tick(); err != nil {
			return err
		}
		r := &l.p.Rules[i]
		if r.Subject == "*" || !l.isRole[r.Subject] {
			continue
		}
		key := toolSubject{r.Tool, r.Subject}
		if !applied[key] {
			l.add(r.File, r.Line, SevWarning, "applies to no identity: every holder of %s has nearer rules for %s, which replace this one", r.Subject, r.Tool)
			continue
		}
		members, ok := replacers[key]
		if !ok {
			for _, g := range byRole[r.Subject] {
				if len(l.p.byTool[r.Tool][g.Member]) > 0 {
					members = append(members, g)
				}
			}
			replacers[key] = members
		}
		for n, g := range members {
			if n == maxNotes {
				l.add(r.File, r.Line, SevNote, "does not apply to %d more members of %s with %s rules of their own", len(members)-maxNotes, r.Subject, r.Tool)
				break
			}
			l.add(r.File, r.Line, SevNote, "does not apply to %s (granted %s on line %d) or its members: %s's own %s rules, from line %d, replace it",
				g.Member, g.Role, g.Line, g.Member, r.Tool, l.p.byTool[r.Tool][g.Member][0].Line)
		}
	}
	return nil
}

// canUse reports whether some rule of subject (not *) may give an identity
// of tenant allow or require_approval on tool, whatever its condition, as
// CanEverUse does; answers are kept per tool, subject and tenant.
func (l *linter) canUse(memo map[string]bool, tool, subject, tenant string) bool {
	key := tool + "\x00" + subject + "\x00" + tenant
	if v, ok := memo[key]; ok {
		return v
	}
	v := false
	for _, r := range l.p.byTool[tool][subject] {
		if r.Effect != Deny && r.appliesIn(tenant) {
			if never, ok := l.pr.neverTrue(r.Cond); !ok || !never {
				v = true
				break
			}
		}
	}
	memo[key] = v
	return v
}

// uses returns, for identity, the first tool of kind (action or approval)
// it may use through its own rules or its roles', and the subject whose
// rules give it; "" when none.
func (l *linter) uses(memo map[string]bool, identity string, approval bool) (tool, via string) {
	tenant := l.p.tenantOf[identity]
	for _, t := range ToolNames() {
		if spec := Tools[t]; (approval && !spec.Approval) || (!approval && !spec.Action) {
			continue
		}
		subjects := make([]string, 0, len(l.p.scopes[identity+"\x00"+t]))
		for s := range l.p.scopes[identity+"\x00"+t] {
			subjects = append(subjects, s)
		}
		sort.Strings(subjects)
		for _, s := range subjects {
			if l.canUse(memo, t, s, tenant) {
				return t, s
			}
		}
	}
	return "", ""
}

// identitiesSorted returns the identities in the order of their first
// grant line, then by name.
func (l *linter) identitiesSorted() []string {
	ids := make([]string, 0, len(l.p.identities))
	for n := range l.p.identities {
		ids = append(ids, n)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if d := l.firstGrant[a].Line - l.firstGrant[b].Line; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return ids
}

// starAllows: `p, *, refund_order, true, allow` lets every identity refund,
// the approvers too, so a supervisor's identity can act as an agent; an
// allow for * on approve_* lets every agent approve.
func (l *linter) starAllows() error {
	var approvers []string
	approversDone := false
	memo := map[string]bool{}
	for _, t := range ToolNames() {
		spec := Tools[t]
		if !spec.Action && !spec.Approval {
			continue
		}
		for _, r := range l.p.byTool[t]["*"] {
			if err := l.tick(); err != nil {
				return err
			}
			if r.Effect != Allow {
				continue
			}
			when := "without any condition"
			if r.Cond != "true" {
				when = "whenever " + r.Cond + " holds"
			}
			if spec.Approval {
				l.add(r.File, r.Line, SevWarning, "every identity, every agent included, may %s %s: grant approve_* tools to approver roles, not to *", strings.ReplaceAll(t, "_", " "), when)
				continue
			}
			if !approversDone {
				approversDone = true
				for _, id := range l.identitiesSorted() {
					if tool, _ := l.uses(memo, id, true); tool != "" {
						approvers = append(approvers, id)
					}
				}
			}
			who := ""
			if len(approvers) > 0 {
				who = fmt.Sprintf(" (approvers here: %s)", listNames(approvers, 5))
			}
			l.add(r.File, r.Line, SevWarning, "every identity, approvers included%s, may use %s %s, so a person who approves can act as an agent too: grant action tools to agent roles, not to *", who, t, when)
		}
	}
	return nil
}

// through says where an identity's rights come from.
func (l *linter) through(id, subject string) string {
	if subject == id {
		return "by its own rules"
	}
	return "through " + subject
}

// listNames joins up to n names, saying how many more there are.
func listNames(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

// twoHats: an identity that may both use an action tool and approve
// actions. Mandate never lets an identity approve its own action, but one
// person or agent holding both keys defeats the reason for a second pair
// of eyes: two such identities can approve each other's actions.
func (l *linter) twoHats() error {
	memo := map[string]bool{}
	for _, id := range l.identitiesSorted() {
		if err := l.tick(); err != nil {
			return err
		}
		act, actVia := l.uses(memo, id, false)
		if act == "" {
			continue
		}
		approve, approveVia := l.uses(memo, id, true)
		if approve == "" {
			continue
		}
		g := l.firstGrant[id]
		file, line := g.File, g.Line
		if line == 0 { // an identity with rules of its own and no g line
			r := l.p.byTool[act][actVia][0]
			file, line = r.File, r.Line
		}
		l.add(file, line, SevWarning, "identity %q holds both an agent's and an approver's rights: it may use %s (%s) and %s (%s); give agents and approvers separate identities",
			id, act, l.through(id, actVia), approve, l.through(id, approveVia))
	}
	return nil
}

// tenantSuffix is ", TENANT" for a rule of one tenant, as policy.csv
// writes it, and "" for a rule of every tenant.
func tenantSuffix(tenant string) string {
	if tenant == "" {
		return ""
	}
	return ", " + tenant
}
