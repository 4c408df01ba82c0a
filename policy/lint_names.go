package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/casbin/govaluate"
	"github.com/mandatehq/mandate"
)

// where is the first line a name appears on.
type where struct {
	file string
	line int
}

// names: identity and role names that hide characters or mix lookalike
// letters (mandate.NameProblem), and names that people could take for
// another name in the policy (the same mandate.Skeleton): "demo‐agent"
// with U+2010 is not demo-agent, though every page shows them alike.
// Names are grouped by skeleton, so this is linear in the names.
func (l *linter) names() error {
	first := map[string]where{}
	note := func(name, file string, line int) {
		if w, ok := first[name]; !ok || line < w.line {
			first[name] = where{file, line}
		}
	}
	for _, g := range l.p.Grants {
		note(g.Member, g.File, g.Line)
		note(g.Role, g.File, g.Line)
	}
	for _, r := range l.p.Rules {
		if r.Subject != "*" {
			note(r.Subject, r.File, r.Line)
		}
	}
	names := make([]string, 0, len(first))
	for n := range first {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := first[a].line - first[b].line; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	bySkeleton := map[string][]string{}
	skeleton := make(map[string]string, len(names))
	for _, n := range names {
		if err := l.tick(); err != nil {
			return err
		}
		s := mandate.Skeleton(n)
		skeleton[n] = s
		bySkeleton[s] = append(bySkeleton[s], n)
	}
	for _, n := range names {
		if err := l.tick(); err != nil {
			return err
		}
		var problems []string
		if msg := mandate.NameProblem(n); msg != "" {
			problems = append(problems, msg)
		}
		// Names are in order of first appearance: the later of two
		// lookalikes is the one to question.
		for _, other := range bySkeleton[skeleton[n]] {
			if other == n {
				break
			}
			problems = append(problems, fmt.Sprintf("it looks like %s %q (line %d), and people reading rules, queues and audit records may take one for the other",
				l.kind(other), mandate.Visible(other, false), first[other].line))
			break
		}
		if len(problems) > 0 {
			w := first[n]
			l.add(w.file, w.line, SevWarning, "%s %q: %s", l.kind(n), mandate.Visible(n, false), strings.Join(problems, "; "))
		}
	}
	return nil
}

// values: a comparison of a text attribute with a value no fact ever
// takes (AttrValues) is false, or for != always true, whatever the facts;
// a stray space or the wrong case is the usual cause.
func (l *linter) values() error {
	problems := map[string]string{} // condition → what is wrong, "" when fine
	for _, r := range l.p.Rules {
		if err := l.tick(); err != nil {
			return err
		}
		msg, done := problems[r.Cond]
		if !done {
			msg = strangeValues(l.p.conds[r.Cond])
			problems[r.Cond] = msg
		}
		if msg != "" {
			l.add(r.File, r.Line, SevWarning, "condition %q %s", truncate(r.Cond, 80), msg)
		}
	}
	return nil
}

// strangeValues returns what is wrong with the text literals a condition
// compares attributes with (==, != or in), or "".
func strangeValues(expr *govaluate.EvaluableExpression) string {
	if expr == nil {
		return ""
	}
	tokens := expr.Tokens()
	var out []string
	check := func(attr string, lit any) {
		s, ok := lit.(string)
		known, enumerated := AttrValues[attr]
		if !ok || !enumerated || slices.Contains(known, s) {
			return
		}
		msg := fmt.Sprintf("compares %s with '%s', a value it never takes", attr, mandate.Visible(s, false))
		if near := nearValue(known, s); near != "" {
			msg += fmt.Sprintf(" (did you mean '%s'?)", near)
		} else {
			msg += fmt.Sprintf(" (%s is one of %s)", attr, listNames(known, 8))
		}
		out = append(out, msg)
	}
	for i, t := range tokens {
		if t.Kind != govaluate.COMPARATOR || i == 0 || i == len(tokens)-1 {
			continue
		}
		op, _ := t.Value.(string)
		a, b := tokens[i-1], tokens[i+1]
		switch op {
		case "==", "!=":
			if b.Kind == govaluate.VARIABLE {
				a, b = b, a
			}
			if a.Kind == govaluate.VARIABLE && b.Kind == govaluate.STRING {
				check(a.Value.(string), b.Value)
			}
		case "in":
			if a.Kind != govaluate.VARIABLE {
				continue
			}
			for _, u := range tokens[i+1:] {
				if u.Kind == govaluate.CLAUSE_CLOSE {
					break
				}
				if u.Kind == govaluate.STRING {
					check(a.Value.(string), u.Value)
				}
			}
		}
	}
	sort.Strings(out)
	return strings.Join(slices.Compact(out), "; ")
}

// nearValue returns the known value s was probably meant to be: equal
// once spaces are trimmed and case is ignored.
func nearValue(known []string, s string) string {
	for _, k := range known {
		if strings.EqualFold(strings.TrimSpace(s), k) {
			return k
		}
	}
	return ""
}
