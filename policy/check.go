package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/casbin/govaluate"
)

// Severities of a Finding. Only errors stop a policy from loading; warnings
// point at rules that do nothing or identities the rules forget; notes are
// for review (a role's rule that some member roles replace, by design).
const (
	SevError   = "error"
	SevWarning = "warning"
	SevNote    = "note"
)

// Finding is one thing `mandate policy check` reports, at file:line.
type Finding struct {
	File     string
	Line     int // 0 when the problem has no single line
	Severity string
	Message  string
}

func (f Finding) String() string {
	if f.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", f.File, f.Line, f.Severity, f.Message)
	}
	return fmt.Sprintf("%s: %s: %s", f.File, f.Severity, f.Message)
}

// Check loads a model and policy and lints what loaded. Everything Load
// refuses is an error (and then nothing else is checked, and the policy
// returned is nil); otherwise the findings are Lint's.
func Check(modelSrc, policySrc Source) (*Policy, []Finding) {
	p, err := Load(modelSrc, policySrc)
	if err != nil {
		return nil, loadFindings(err, modelSrc, policySrc)
	}
	return p, p.Lint()
}

var problemAt = regexp.MustCompile(`^(.+?):(\d+): (.*)$`)

// loadFindings turns a load error into findings with file:line, finding
// the line for the few problems Load reports without one.
func loadFindings(err error, modelSrc, policySrc Source) []Finding {
	var le *LoadError
	if !errors.As(err, &le) {
		return []Finding{{File: policySrc.Name, Severity: SevError, Message: err.Error()}}
	}
	var out []Finding
	for _, problem := range le.Problems {
		if m := problemAt.FindStringSubmatch(problem); m != nil {
			line, _ := strconv.Atoi(m[2])
			out = append(out, Finding{File: m[1], Line: line, Severity: SevError, Message: m[3]})
			continue
		}
		if msg, ok := strings.CutPrefix(problem, modelSrc.Name+": "); ok {
			out = append(out, Finding{File: modelSrc.Name, Line: modelLine(modelSrc.Data, msg), Severity: SevError, Message: msg})
			continue
		}
		f := Finding{File: policySrc.Name, Severity: SevError, Message: problem}
		// "role chain from "X" is deeper than 10 or has a cycle": point at
		// X's first grant.
		if i := strings.IndexByte(problem, '"'); i >= 0 {
			if name, err := strconv.QuotedPrefix(problem[i:]); err == nil {
				name, _ = strconv.Unquote(name)
				if parsed, err := parse(policySrc); err == nil {
					for _, g := range parsed.grants {
						if g.Member == name {
							f.Line = g.Line
							break
						}
					}
				}
			}
		}
		out = append(out, f)
	}
	sortFindings(out)
	return out
}

// modelLine finds the line of model.conf a model problem is about: the
// definition itself, else its section header.
func modelLine(data []byte, msg string) int {
	var def, header string
	switch {
	case strings.HasPrefix(msg, "r must"):
		def, header = "r", "[request_definition]"
	case strings.HasPrefix(msg, "p must"):
		def, header = "p", "[policy_definition]"
	case strings.Contains(msg, "[matchers]"):
		def, header = "m", "[matchers]"
	default:
		return 0
	}
	headerLine := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if key, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(key) == def {
			return n
		}
		if l == header && headerLine == 0 {
			headerLine = n
		}
	}
	return headerLine
}

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
//     role's wider limits).
//
// Conditions are compared by probing, not proved: each attribute a
// condition uses takes values around every number literal in it (c-1,
// c-0.01, c, c+0.01, c+1, and 0, 1, -1, 10^9) and every text literal plus
// the known values (statuses, fields, currencies). Conditions built from
// comparisons with constants, && and || are judged exactly; anything else
// may be missed, never flagged wrongly by accident of a near value.
func (p *Policy) Lint() []Finding {
	var out []Finding
	add := func(file string, line int, sev, format string, args ...any) {
		out = append(out, Finding{File: file, Line: line, Severity: sev, Message: fmt.Sprintf(format, args...)})
	}
	inGrant, isRole := map[string]bool{}, map[string]bool{}
	firstGrant := map[string]Grant{}
	for _, g := range p.Grants {
		inGrant[g.Member], inGrant[g.Role], isRole[g.Role] = true, true, true
		for _, n := range []string{g.Member, g.Role} {
			if _, ok := firstGrant[n]; !ok {
				firstGrant[n] = g
			}
		}
	}
	hasRules := map[string]map[string][]*Rule{} // tool → subject → rules
	for i := range p.Rules {
		r := &p.Rules[i]
		if hasRules[r.Tool] == nil {
			hasRules[r.Tool] = map[string][]*Rule{}
		}
		hasRules[r.Tool][r.Subject] = append(hasRules[r.Tool][r.Subject], r)
	}

	// Subjects and names.
	warned := map[string]bool{}
	for _, r := range p.Rules {
		if r.Subject != "*" && !inGrant[r.Subject] && !warned[r.Subject] {
			warned[r.Subject] = true
			add(r.File, r.Line, SevWarning, "%q has rules but is in no g line: if it is a role, nobody has it (ignore this if it is an identity with rules of its own)", r.Subject)
		}
	}
	names := make([]string, 0, len(firstGrant))
	for n := range firstGrant {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		reached := false
		for key := range p.scopes {
			if strings.HasPrefix(key, n+"\x00") && len(p.scopes[key]) > 0 {
				reached = true
				break
			}
		}
		if !reached {
			g := firstGrant[n]
			kind := "identity"
			if isRole[n] {
				kind = "role"
			}
			add(g.File, g.Line, SevWarning, "%s %q reaches no rules through its name or roles, only the rules for *: check the role names for a typo", kind, n)
		}
	}

	// Cycles: Mandate's own role walk stops at names it has seen, so a cycle
	// loads, but it is always a mistake.
	for _, c := range grantCycles(p.Grants) {
		add(c[0].File, c[0].Line, SevWarning, "role cycle: %s", cycleText(c))
	}

	// Conditions.
	for i := range p.Rules {
		r := &p.Rules[i]
		probes, ok := p.probes(r.Tool, r.Cond)
		if !ok {
			continue
		}
		if r.Cond != "true" && !anyTrue(p.conds[r.Cond], probes) {
			add(r.File, r.Line, SevWarning, "condition %q is false for every value probed: this rule never matches", r.Cond)
			continue
		}
		for j := range p.Rules {
			o := &p.Rules[j]
			if i == j || o.Tool != r.Tool || restrictiveness[o.Effect] <= restrictiveness[r.Effect] {
				continue
			}
			if o.Subject != r.Subject && o.Subject != "*" {
				continue
			}
			both, ok := p.probes(r.Tool, r.Cond, o.Cond)
			if !ok || !implies(p.conds[r.Cond], p.conds[o.Cond], both) {
				continue
			}
			add(r.File, r.Line, SevWarning, "always overridden by line %d (p, %s, %s, %s, %s), which matches whenever this rule does and is more restrictive",
				o.Line, o.Subject, o.Tool, o.Cond, o.Effect)
			break
		}
	}

	// Role replacement.
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Subject == "*" || !isRole[r.Subject] {
			continue
		}
		applies := false
		for n := range p.known {
			if !isRole[n] && p.scopes[n+"\x00"+r.Tool][r.Subject] {
				applies = true
				break
			}
		}
		if !applies {
			add(r.File, r.Line, SevWarning, "applies to no identity: every holder of %s has nearer rules for %s, which replace this one", r.Subject, r.Tool)
			continue
		}
		for _, g := range p.Grants {
			if g.Role == r.Subject && len(hasRules[r.Tool][g.Member]) > 0 {
				add(r.File, r.Line, SevNote, "does not apply to %s (granted %s on line %d) or its members: %s's own %s rules, from line %d, replace it",
					g.Member, g.Role, g.Line, g.Member, r.Tool, hasRules[r.Tool][g.Member][0].Line)
			}
		}
	}
	sortFindings(out)
	return out
}

// grantCycles returns each cycle in the g lines once, as the grants that
// form it, starting from its earliest line.
func grantCycles(grants []Grant) [][]Grant {
	from := map[string][]Grant{}
	for _, g := range grants {
		from[g.Member] = append(from[g.Member], g)
	}
	var out [][]Grant
	seen := map[string]bool{}
	var path []Grant
	onPath := map[string]bool{}
	var walk func(n string)
	walk = func(n string) {
		onPath[n] = true
		for _, g := range from[n] {
			path = append(path, g)
			if onPath[g.Role] {
				i := len(path) - 1
				for path[i].Member != g.Role {
					i--
				}
				c := slices.Clone(path[i:])
				first := 0
				for j := range c {
					if c[j].Line < c[first].Line {
						first = j
					}
				}
				c = append(c[first:], c[:first]...)
				key := fmt.Sprint(c[0].Line)
				if !seen[key] {
					seen[key] = true
					out = append(out, c)
				}
			} else {
				walk(g.Role)
			}
			path = path[:len(path)-1]
		}
		onPath[n] = false
	}
	names := make([]string, 0, len(from))
	for n := range from {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		walk(n)
	}
	return out
}

func cycleText(c []Grant) string {
	parts := []string{c[0].Member}
	for _, g := range c {
		parts = append(parts, fmt.Sprintf("%s (line %d)", g.Role, g.Line))
	}
	return strings.Join(parts, " -> ")
}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].File != fs[j].File {
			return fs[i].File < fs[j].File
		}
		return fs[i].Line < fs[j].Line
	})
}

// maxProbes bounds the grid; a pair of conditions over more combinations is
// not judged.
const maxProbes = 20000

// probeValues are the values every text attribute is tried with besides
// the conditions' own literals.
var probeValues = map[string][]string{
	AttrOrderStatus: {"pending", "processing", "shipped", "delivered", "cancelled"},
	AttrCurrency:    {"USD", "EUR", "GBP", "JPY"},
	AttrField:       {"email", "phone", "shipping_address", "name"},
}

// probes returns attribute sets covering the variables of conds, each set
// complete for the tool (other attributes at their sample values).
func (p *Policy) probes(tool string, conds ...string) ([]map[string]any, bool) {
	var nums []float64
	var strs []string
	vars := map[string]bool{}
	for _, c := range conds {
		expr := p.conds[c]
		if expr == nil {
			return nil, false
		}
		for _, v := range expr.Vars() {
			vars[v] = true
		}
		for _, tok := range expr.Tokens() {
			switch tok.Kind {
			case govaluate.NUMERIC:
				if f, ok := tok.Value.(float64); ok {
					nums = append(nums, f-1, f-0.01, f, f+0.01, f+1)
				}
			case govaluate.STRING:
				if s, ok := tok.Value.(string); ok {
					strs = append(strs, s)
				}
			}
		}
	}
	nums = append(nums, 0, 1, -1, 1e9)
	slices.Sort(nums)
	nums = slices.Compact(nums)
	names := make([]string, 0, len(vars))
	for v := range vars {
		names = append(names, v)
	}
	sort.Strings(names)
	axes := make([][]any, len(names))
	total := 1
	for i, v := range names {
		switch sampleAttrs[v].(type) {
		case float64:
			for _, n := range nums {
				axes[i] = append(axes[i], n)
			}
		default:
			seen := map[string]bool{}
			for _, s := range append(append([]string{"", "other"}, probeValues[v]...), strs...) {
				if !seen[s] {
					seen[s] = true
					axes[i] = append(axes[i], s)
				}
			}
		}
		total *= len(axes[i])
		if total > maxProbes {
			return nil, false
		}
	}
	out := make([]map[string]any, 0, total)
	idx := make([]int, len(names))
	for {
		m := make(map[string]any, len(sampleAttrs))
		for k, v := range sampleAttrs {
			m[k] = v
		}
		for i, v := range names {
			m[v] = axes[i][idx[i]]
		}
		out = append(out, m)
		k := len(idx) - 1
		for ; k >= 0; k-- {
			idx[k]++
			if idx[k] < len(axes[k]) {
				break
			}
			idx[k] = 0
		}
		if k < 0 {
			break
		}
	}
	return out, true
}

func holds(expr *govaluate.EvaluableExpression, attrs map[string]any) bool {
	out, err := expr.Evaluate(attrs)
	b, _ := out.(bool)
	return err == nil && b
}

func anyTrue(expr *govaluate.EvaluableExpression, probes []map[string]any) bool {
	for _, m := range probes {
		if holds(expr, m) {
			return true
		}
	}
	return false
}

// implies reports whether b holds on every probe where a holds, and a
// holds on at least one.
func implies(a, b *govaluate.EvaluableExpression, probes []map[string]any) bool {
	some := false
	for _, m := range probes {
		if holds(a, m) {
			some = true
			if !holds(b, m) {
				return false
			}
		}
	}
	return some
}
