package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// CaseFile is a file of expected decisions, the admin's regression tests
// for a policy (`mandate policy test`).
type CaseFile struct {
	Name string `yaml:"-"`
	// Store says where facts come from for cases that give args but no
	// attrs: "demo" for the demo data set rebased to now, or a data file in
	// `mandate store import` format, relative to the case file.
	Store string `yaml:"store"`
	Cases []Case `yaml:"cases"`
}

// Case is one expected decision. It gives Attrs (the attribute values
// themselves), or Args (the tool's arguments: the facts are then read from
// the case file's store the way the guard reads them, and any Attrs given
// too replace the ones read, e.g. a usage counter of limits over time).
type Case struct {
	Name   string         `yaml:"name"`
	Agent  string         `yaml:"agent"`
	Tool   string         `yaml:"tool"`
	Args   map[string]any `yaml:"args"`
	Attrs  map[string]any `yaml:"attrs"`
	Expect string         `yaml:"expect"`
	// Rule, when set, must be a substring of the deciding rule as the audit
	// shows it ("policy.csv:21: p, support_agent, refund_order, ...").
	Rule string `yaml:"rule"`
	Line int    `yaml:"-"`
}

// LoadCases reads and validates a case file.
func LoadCases(name string, data []byte) (*CaseFile, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	cf := &CaseFile{Name: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cf); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	cf.Name = name
	// Line numbers come from the node tree: cases is a sequence of maps.
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "cases" && m.Content[i+1].Kind == yaml.SequenceNode {
				for j, n := range m.Content[i+1].Content {
					if j < len(cf.Cases) {
						cf.Cases[j].Line = n.Line
					}
				}
			}
		}
	}
	if len(cf.Cases) == 0 {
		return nil, fmt.Errorf("%s: no cases (write them under cases:)", name)
	}
	var problems []string
	for i := range cf.Cases {
		c := &cf.Cases[i]
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d", i+1)
		}
		bad := func(format string, args ...any) {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", name, c.Line, c.Name, fmt.Sprintf(format, args...)))
		}
		switch {
		case c.Agent == "":
			bad("agent is required")
		case c.Tool == "":
			bad("tool is required")
		case c.Expect != Allow && c.Expect != Deny && c.Expect != RequireApproval:
			bad("expect must be allow, deny or require_approval, not %q", c.Expect)
		case c.Attrs == nil && c.Args == nil:
			bad("give attrs (the attribute values) or args (read facts from the store)")
		}
		if t, ok := Tools[c.Tool]; c.Tool != "" && !ok {
			bad("unknown tool %q", c.Tool)
		} else if ok {
			// A misspelt attribute would leave the one the rules test
			// unset: every condition on it errors, and a deny case passes
			// whatever the rules say.
			for k := range c.Attrs {
				if !slices.Contains(t.Attrs, k) && k != FactRate && k != FactRatesVersion && k != FactBaseCurrency {
					if len(t.Attrs) == 0 {
						bad("unknown attribute %q: %s has none", k, c.Tool)
					} else {
						bad("unknown attribute %q: %s has %s", k, c.Tool, strings.Join(t.Attrs, ", "))
					}
				}
			}
		}
		c.Attrs = normalize(c.Attrs)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return cf, nil
}

// normalize turns YAML's integers into the float64 the guard supplies, so
// that `amount: 30` compares like 30.00.
func normalize(attrs map[string]any) map[string]any {
	if attrs == nil {
		return nil
	}
	out := make(map[string]any, len(attrs))
	for k, v := range attrs {
		switch n := v.(type) {
		case int:
			out[k] = float64(n)
		case int64:
			out[k] = float64(n)
		case uint64:
			out[k] = float64(n)
		default:
			out[k] = v
		}
	}
	return out
}

// FactsFunc reads the attributes for a call from a system of record, as
// the guard does (tools.Facts).
type FactsFunc func(tool string, args map[string]any) (map[string]any, error)

// CaseResult is one case run against a policy.
type CaseResult struct {
	Case  Case
	Attrs map[string]any // what was decided on
	Got   Decision
	Pass  bool
}

// RunCases decides every case with p. Cases without attrs get theirs from
// facts; a facts error is a deny, as in the guard.
func RunCases(p *Policy, cases []Case, facts FactsFunc) []CaseResult {
	out := make([]CaseResult, 0, len(cases))
	for _, c := range cases {
		res := CaseResult{Case: c, Attrs: c.Attrs}
		switch {
		case c.Args == nil:
			res.Got = p.Decide(Request{Agent: c.Agent, Tool: c.Tool, Attrs: c.Attrs})
		case facts == nil:
			res.Got = Decision{Effect: Deny, Reason: "no store to read facts from", Version: p.Version}
		default:
			attrs, err := facts(c.Tool, c.Args)
			if err != nil {
				res.Got = Decision{Effect: Deny, Reason: "facts could not be loaded: " + err.Error(), Version: p.Version}
				break
			}
			for k, v := range c.Attrs {
				attrs[k] = v
			}
			res.Attrs = attrs
			res.Got = p.Decide(Request{Agent: c.Agent, Tool: c.Tool, Attrs: attrs})
		}
		res.Pass = res.Got.Effect == c.Expect && (c.Rule == "" || strings.Contains(res.Got.RuleText(), c.Rule))
		if res.Got.PolicyError() && c.Rule == "" {
			// Denied because a condition could not be evaluated (an
			// attribute the rules test is missing): that says nothing about
			// what the rules decide, so it passes only a case that names
			// the error in rule:.
			res.Pass = false
		}
		out = append(out, res)
	}
	return out
}

// Diff describes a failed case for people: what was asked, what was
// expected and what the policy decided instead, and on which attributes.
func (r CaseResult) Diff(file string) string {
	var b strings.Builder
	c := r.Case
	fmt.Fprintf(&b, "FAIL %s:%d: %s\n", file, c.Line, c.Name)
	fmt.Fprintf(&b, "     %s calls %s", c.Agent, c.Tool)
	if c.Args != nil {
		args, _ := json.Marshal(c.Args)
		fmt.Fprintf(&b, " with %s", args)
	}
	b.WriteString("\n")
	if len(r.Attrs) > 0 {
		fmt.Fprintf(&b, "     attributes: %s\n", attrsText(r.Attrs))
	}
	want := c.Expect
	if c.Rule != "" {
		want += fmt.Sprintf(" by a rule containing %q", c.Rule)
	}
	fmt.Fprintf(&b, "   - want: %s\n", want)
	fmt.Fprintf(&b, "   + got:  %s by %s\n", r.Got.Effect, r.Got.RuleText())
	if r.Got.PolicyError() {
		b.WriteString("     (a condition could not be evaluated: give every attribute the rules test, or expect it with rule: \"policy error\")\n")
	}
	return b.String()
}

func attrsText(attrs map[string]any) string {
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + formatAttr(attrs[k])
	}
	return strings.Join(parts, " ")
}
