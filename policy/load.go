package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/casbin/govaluate"
)

// Source is one input file: its name (for messages) and its content.
type Source struct {
	Name string
	Data []byte
}

// Rule is one p line of the policy as the admin wrote it.
type Rule struct {
	File    string
	Line    int
	Subject string
	Tool    string
	Cond    string
	Effect  string
	// Tenant, when set, limits the rule to identities of that tenant.
	Tenant string
}

// String names the rule the way an admin finds it: file:line and the line.
func (r Rule) String() string {
	s := fmt.Sprintf("%s:%d: p, %s, %s, %s, %s", r.File, r.Line, r.Subject, r.Tool, r.Cond, r.Effect)
	if r.Tenant != "" {
		s += ", " + r.Tenant
	}
	return s
}

// row is the rule as Casbin sees it: tenants are resolved before Casbin,
// by choosing which rules it is given.
func (r Rule) row() []string { return []string{r.Subject, r.Tool, r.Cond, r.Effect} }

func (r Rule) key() string {
	return r.Subject + "\x00" + r.Tool + "\x00" + r.Cond + "\x00" + r.Effect + "\x00" + r.Tenant
}

// appliesIn reports whether the rule holds in tenant ("" for an identity
// with no tenant): rules without a tenant hold everywhere.
func (r Rule) appliesIn(tenant string) bool { return r.Tenant == "" || r.Tenant == tenant }

// Grant is one g line: Member (an identity or role) has Role, everywhere
// or, with Tenant, only in that tenant. An identity granted a role in a
// tenant belongs to that tenant.
type Grant struct {
	File   string
	Line   int
	Member string
	Role   string
	Tenant string
}

// LoadError lists everything wrong with a policy, each with file:line.
type LoadError struct{ Problems []string }

func (e *LoadError) Error() string { return strings.Join(e.Problems, "\n") }

// parsed is the policy file read and checked, before Casbin sees it.
type parsed struct {
	rules     []Rule
	grants    []Grant
	conds     map[string]*govaluate.EvaluableExpression
	parseErrs map[string]string
}

// parse reads policy.csv with line numbers and refuses what Casbin's own
// CSV adapter would accept silently: unknown effects, a trailing # comment
// swallowed into the effect, unknown tools, conditions that do not compile
// or test attributes the tool does not supply, and duplicate rules.
func parse(src Source) (*parsed, error) {
	p := &parsed{conds: map[string]*govaluate.EvaluableExpression{}, parseErrs: map[string]string{}}
	var problems []string
	bad := func(line int, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: %s", src.Name, line, fmt.Sprintf(format, args...)))
	}

	r := csv.NewReader(bytes.NewReader(src.Data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	seen := map[string]int{}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				// encoding/csv cannot resynchronise after a quote error:
				// say where it is, what to write, and that checking stopped.
				const rest = "lines after this one were not checked"
				switch {
				case errors.Is(pe.Err, csv.ErrBareQuote):
					bad(pe.StartLine, `column %d: a " inside a field that does not start with one; put the whole field in double quotes and double each quote inside it, or write text in single quotes ('x'); %s`, pe.Column, rest)
				case errors.Is(pe.Err, csv.ErrQuote):
					bad(pe.StartLine, `the quoted field that starts on this line does not end with a " before a comma or the end of the line (seen at line %d, column %d); close it, and double each quote inside it; %s`, pe.Line, pe.Column, rest)
				default:
					bad(pe.StartLine, "%v (put a field that contains a comma or a quote in double quotes, and double any quote inside it); %s", pe.Err, rest)
				}
				return nil, &LoadError{problems}
			}
			return nil, err
		}
		line, _ := r.FieldPos(0)
		for i := range rec {
			rec[i] = strings.TrimSpace(rec[i])
		}
		if len(rec) == 1 && rec[0] == "" {
			continue
		}
		switch rec[0] {
		case "p":
			// A sixth field is a tenant, unless it looks like an effect: then
			// a comma split the condition.
			if len(rec) != 5 && (len(rec) != 6 || restrictiveness[rec[5]] != 0) {
				bad(line, "a rule has 5 fields (p, subject, tool, condition, effect, and optionally a tenant), this line has %d; quote a condition that contains a comma", len(rec))
				continue
			}
			rule := Rule{File: src.Name, Line: line, Subject: rec[1], Tool: rec[2], Cond: rec[3], Effect: rec[4]}
			if len(rec) == 6 {
				if rule.Tenant = rec[5]; !validName(rule.Tenant) {
					bad(line, "%s", tenantProblem(rule.Tenant))
					continue
				}
			}
			if msg := p.checkRule(rule); msg != "" {
				bad(line, "%s", msg)
				continue
			}
			if first, dup := seen[rule.key()]; dup {
				bad(line, "duplicate of the rule on line %d", first)
				continue
			}
			seen[rule.key()] = line
			p.rules = append(p.rules, rule)
		case "g":
			if len(rec) != 3 && len(rec) != 4 {
				bad(line, "a role grant has 3 fields (g, member, role, and optionally a tenant), this line has %d", len(rec))
				continue
			}
			g := Grant{File: src.Name, Line: line, Member: rec[1], Role: rec[2]}
			if len(rec) == 4 {
				if g.Tenant = rec[3]; !validName(g.Tenant) {
					bad(line, "%s", tenantProblem(g.Tenant))
					continue
				}
			}
			switch {
			case g.Member == "" || g.Role == "":
				bad(line, "empty member or role")
			case strings.ContainsAny(g.Member+g.Role, "# "):
				bad(line, "identity and role names cannot contain spaces or #; a # comment must be on its own line")
			case g.Member == "*" || g.Role == "*":
				bad(line, "* means everyone in rules; it cannot be granted or be a role")
			case g.Member == g.Role:
				bad(line, "%q cannot be a member of itself", g.Member)
			default:
				p.grants = append(p.grants, g)
			}
		default:
			bad(line, "a line starts with p (a rule) or g (a role grant), not %q", truncate(rec[0], 30))
		}
	}
	problems = append(problems, p.compileAll(src.Name)...)
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b string) int { return lineOf(a) - lineOf(b) })
		return nil, &LoadError{problems}
	}
	return p, nil
}

// validName reports whether s is a usable tenant name.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// tenantProblem says what is wrong with a tenant that is not validName:
// like the effect, a tenant followed by a # comment gets the hint that the
// comment must be on its own line.
func tenantProblem(s string) string {
	if before, _, ok := strings.Cut(s, "#"); ok && validName(strings.TrimSpace(before)) {
		return fmt.Sprintf("text after the tenant %q: a # comment must be on its own line", strings.TrimSpace(before))
	}
	return fmt.Sprintf("tenant %q: use letters, digits, '-', '_' or '.'", truncate(s, 40))
}

// lineOf reads N from a "file:N: message" problem, for sorting.
func lineOf(problem string) int {
	parts := strings.SplitN(problem, ":", 3)
	if len(parts) < 3 {
		return 0
	}
	n, _ := strconv.Atoi(parts[1])
	return n
}

// checkRule returns what is wrong with one rule, or "".
func (p *parsed) checkRule(rule Rule) string {
	switch {
	case rule.Subject == "":
		return "empty subject: name an identity, a role, or * for everyone"
	case strings.ContainsAny(rule.Subject, " #"):
		return fmt.Sprintf("subject %q cannot contain spaces or #", truncate(rule.Subject, 40))
	}
	t, ok := Tools[rule.Tool]
	if !ok {
		return fmt.Sprintf("unknown tool %q; tools are %s", truncate(rule.Tool, 40), strings.Join(ToolNames(), ", "))
	}
	if _, ok := restrictiveness[rule.Effect]; !ok {
		if i := strings.IndexByte(rule.Effect, '#'); i >= 0 {
			return fmt.Sprintf("text after the effect %q: a # comment must be on its own line, or this rule silently stops working", strings.TrimSpace(rule.Effect[:i]))
		}
		return fmt.Sprintf("unknown effect %q: use allow, deny or require_approval", truncate(rule.Effect, 40))
	}
	if rule.Effect == RequireApproval && !t.Action && !t.Approval && !t.Admin {
		// A lookup keeps no action that a person could approve: it would
		// answer "pending" with a reference to nothing.
		return fmt.Sprintf("%s is a lookup, which cannot wait for a person's approval: use allow or deny", rule.Tool)
	}
	if rule.Cond == "" {
		return "empty condition: write true for a rule without one"
	}
	return ""
}

// parallel calls fn(0) … fn(n-1) on every CPU.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// compileAll parses every distinct condition once, in parallel (parsing
// dominates loading a large policy), then checks each rule's condition
// against its own tool's attributes. It returns the rules that passed and a
// problem per rule that did not.
func (p *parsed) compileAll(file string) []string {
	var texts []string
	for _, r := range p.rules {
		if _, ok := p.conds[r.Cond]; !ok {
			p.conds[r.Cond] = nil
			texts = append(texts, r.Cond)
		}
	}
	exprs := make([]*govaluate.EvaluableExpression, len(texts))
	errs := make([]error, len(texts))
	parallel(len(texts), func(i int) { exprs[i], errs[i] = govaluate.NewEvaluableExpression(texts[i]) })
	for i, t := range texts {
		p.conds[t] = exprs[i]
		if errs[i] != nil {
			p.parseErrs[t] = errs[i].Error()
		}
	}

	// Check each distinct (tool, condition) pair, also in parallel.
	var keys []Rule
	checked := map[string]string{} // tool + cond → problem, "" when fine
	for _, r := range p.rules {
		key := r.Tool + "\x00" + r.Cond
		if _, ok := checked[key]; !ok {
			checked[key] = ""
			keys = append(keys, r)
		}
	}
	msgs := make([]string, len(keys))
	parallel(len(keys), func(i int) {
		r := keys[i]
		if msg, bad := p.parseErrs[r.Cond]; bad {
			msgs[i] = msg
		} else if err := checkCond(p.conds[r.Cond], Tools[r.Tool]); err != nil {
			msgs[i] = err.Error()
		}
	})
	for i, r := range keys {
		checked[r.Tool+"\x00"+r.Cond] = msgs[i]
	}

	var problems []string
	kept := p.rules[:0]
	for _, r := range p.rules {
		if msg := checked[r.Tool+"\x00"+r.Cond]; msg != "" {
			problems = append(problems, fmt.Sprintf("%s:%d: condition %q: %s", file, r.Line, truncate(r.Cond, 80), msg))
			continue
		}
		kept = append(kept, r)
	}
	p.rules = kept
	return problems
}

// checkCond proves a compiled condition fits its tool before any request
// sees it: it names only the tool's attributes, compares numbers with
// numbers and text with text, and gives true or false, with no type error,
// for a spread of values that reach past && and || short-circuits.
func checkCond(expr *govaluate.EvaluableExpression, tool Tool) error {
	for _, v := range expr.Vars() {
		if !slices.Contains(tool.Attrs, v) {
			if len(tool.Attrs) == 0 {
				return fmt.Errorf("unknown attribute %q: this tool has no attributes, use true", v)
			}
			return fmt.Errorf("unknown attribute %q; this tool has %s", v, strings.Join(tool.Attrs, ", "))
		}
	}
	tokens := expr.Tokens()
	var texts []string
	for i, t := range tokens {
		if t.Kind == govaluate.STRING {
			texts = append(texts, fmt.Sprint(t.Value))
		}
		if t.Kind != govaluate.COMPARATOR || i == 0 || i == len(tokens)-1 {
			continue
		}
		// A comparison of an attribute with a literal of the other type is
		// an error for < and >, and silently false for == and !=.
		a, b := tokens[i-1], tokens[i+1]
		if b.Kind == govaluate.VARIABLE {
			a, b = b, a
		}
		if a.Kind != govaluate.VARIABLE || (b.Kind != govaluate.NUMERIC && b.Kind != govaluate.STRING) {
			continue
		}
		name := fmt.Sprint(a.Value)
		_, isText := sampleAttrs[name].(string)
		if isText != (b.Kind == govaluate.STRING) {
			what := "a number"
			if isText {
				what = "text"
			}
			return fmt.Errorf("compares %s (%s) with %v: compare numbers with numbers and text with 'quoted text'", name, what, literal(b))
		}
	}
	for _, sample := range samples(texts) {
		out, err := expr.Evaluate(sample)
		if err != nil {
			return fmt.Errorf("does not evaluate: %v (compare numbers with numbers and text with 'quoted text')", err)
		}
		if _, ok := out.(bool); !ok {
			return fmt.Errorf("is not true or false (it gives %v)", out)
		}
	}
	return nil
}

func literal(t govaluate.ExpressionToken) string {
	if t.Kind == govaluate.STRING {
		return fmt.Sprintf("'%v'", t.Value)
	}
	return fmt.Sprint(t.Value)
}

// samples returns attribute sets to evaluate a condition with: every
// number negative or huge, and every text each literal the
// condition mentions, so both sides of && and || get evaluated.
func samples(texts []string) []map[string]any {
	if len(texts) == 0 {
		return numberSamples
	}
	out := append([]map[string]any(nil), numberSamples...)
	for _, t := range texts {
		for _, n := range []float64{1e12} {
			m := make(map[string]any, len(sampleAttrs))
			for name, v := range sampleAttrs {
				if _, isText := v.(string); isText {
					m[name] = t
				} else {
					m[name] = n
				}
			}
			out = append(out, m)
		}
	}
	return out
}

// numberSamples vary the numbers and keep the texts of sampleAttrs. They
// are only read.
var numberSamples = func() []map[string]any {
	var out []map[string]any
	for _, n := range []float64{-1, 1e12} {
		m := make(map[string]any, len(sampleAttrs))
		for name, v := range sampleAttrs {
			if _, isText := v.(string); isText {
				m[name] = v
			} else {
				m[name] = n
			}
		}
		out = append(out, m)
	}
	return out
}()

// sampleAttrs has every attribute with a value of its real type.
var sampleAttrs = map[string]any{
	AttrAmount: 1.0, AttrAmountBase: 1.0, AttrCurrency: "USD", AttrOrderTotal: 1.0, AttrOrderTotalBase: 1.0, AttrOrderRefunded: 0.0,
	AttrOrderRefundable: 1.0, AttrOrderStatus: "pending", AttrCustomerAgeDays: 1.0, AttrField: "email",
	AttrAgentRefunded24h: 0.0, AttrAgentRefunds24h: 0.0, AttrCustomerRefunds30d: 0.0, AttrAgentCancellations1h: 0.0,
}

// Version names a model and policy pair: the first 16 hex digits of a
// SHA-256 over both. Audit records carry it.
func Version(model, policy []byte) string {
	h := sha256.New()
	h.Write(model)
	h.Write([]byte{0})
	h.Write(policy)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
