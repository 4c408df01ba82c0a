// Command cedar compares Mandate's decision with cedar-go's on the shipped
// policy: it translates model.conf and policy.csv into Cedar, checks that
// both engines decide a grid of requests alike (effect and deciding rule),
// and times both on the same requests in one run.
//
//	cd bench/cedar && go run .
//
// It is a module of its own so that cedar-go never enters the product's
// go.mod. Run it on an idle machine for absolute numbers; the ratio is what
// to compare across runs.
//
// The translation. Mandate has three effects and Cedar two, so each rule
// becomes a Cedar policy carrying its effect and line as annotations:
// allow → permit, require_approval → permit @effect("require_approval"),
// deny → forbid. A rule for * that escalates restricts but grants nothing
// (policy.go, mostRestrictive): it is annotated @grants("false"), and a
// Cedar "allow" backed only by such permits reads as a deny. "A role's own
// rules for a tool replace those it inherits" is resolved the way Mandate
// resolves it (scopes below) and put into the entity hierarchy: identity →
// Scope::"SUBJECT|TOOL" for each subject whose rules apply to it on a tool.
// Conditions are translated token by token; Cedar has no floating point, so
// every number (money in major units, ages in days) is scaled by 100 to an
// integer on both the rule and the request side: 50.00 → 5000.
package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/mandatehq/mandate/policy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cedar bench: FAIL:", err)
		os.Exit(1)
	}
}

func run() error {
	root := filepath.Join("..", "..")
	model, err := os.ReadFile(filepath.Join(root, "model.conf"))
	if err != nil {
		return err
	}
	csv, err := os.ReadFile(filepath.Join(root, "policy.csv"))
	if err != nil {
		return err
	}
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: model}, policy.Source{Name: "policy.csv", Data: csv})
	if err != nil {
		return err
	}
	tr, err := translate(p)
	if err != nil {
		return err
	}
	reqs := requests(p)
	// Every request decided alike, or nothing is timed.
	for _, r := range reqs {
		m := p.Decide(r.mandate)
		c := tr.decide(r.cedar)
		ml := 0
		if m.Rule != nil {
			ml = m.Rule.Line
		}
		if m.Effect != c.effect || ml != c.line {
			return fmt.Errorf("%s %s %v: Mandate %s (line %d), Cedar %s (line %d)", r.mandate.Agent, r.mandate.Tool, r.mandate.Attrs, m.Effect, ml, c.effect, c.line)
		}
	}
	effects := map[string]int{}
	for _, r := range reqs {
		effects[p.Decide(r.mandate).Effect]++
	}
	fmt.Printf("The shipped policy (%d rules) as %d Cedar policies: %d requests decided alike (allow %d, require_approval %d, deny %d).\n\n",
		len(p.Rules), len(tr.lines), len(reqs), effects[policy.Allow], effects[policy.RequireApproval], effects[policy.Deny])

	// The timed mix: the four requests of policy/bench_test.go's
	// BenchmarkDecide, and the whole grid.
	mix := []int{}
	for i, r := range reqs {
		if r.mix {
			mix = append(mix, i)
		}
	}
	fmt.Println("| requests | engine | ns/decision | allocs/decision | B/decision | vs cedar-go |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, set := range []struct {
		name string
		idx  []int
	}{{"BenchmarkDecide's four", mix}, {fmt.Sprintf("the whole grid (%d)", len(reqs)), allIdx(len(reqs))}} {
		mb := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				p.Decide(reqs[set.idx[i%len(set.idx)]].mandate)
			}
		})
		cb := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				cedar.Authorize(tr.ps, tr.entities, reqs[set.idx[i%len(set.idx)]].cedar)
			}
		})
		// Mandate's three-valued answer needs the annotations read back, so
		// cedar-go's timing above is its Authorize alone: a lower bound.
		mns, cns := float64(mb.NsPerOp()), float64(cb.NsPerOp())
		fmt.Printf("| %s | Mandate (Casbin rules, index) | %.0f | %d | %d | %.2f× |\n", set.name, mns, mb.AllocsPerOp(), mb.AllocedBytesPerOp(), mns/cns)
		fmt.Printf("| %s | cedar-go %s | %.0f | %d | %d | 1.00× |\n", set.name, cedarVersion, cns, cb.AllocsPerOp(), cb.AllocedBytesPerOp())
	}
	return nil
}

const cedarVersion = "v1.9.1"

func allIdx(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// translation is the shipped policy in Cedar.
type translation struct {
	ps       *cedar.PolicySet
	entities cedar.EntityMap
	lines    map[cedar.PolicyID]int // Cedar policy → policy.csv line
	effect   map[cedar.PolicyID]string
	grants   map[cedar.PolicyID]bool
	text     string
}

type answer struct {
	effect string
	line   int
}

// decide reads a Cedar authorization as Mandate's three-valued decision.
func (t *translation) decide(req cedar.Request) answer {
	d, diag := cedar.Authorize(t.ps, t.entities, req)
	first := func(want string) int {
		line := 0
		for _, r := range diag.Reasons {
			if l := t.lines[r.PolicyID]; (want == "" || t.effect[r.PolicyID] == want) && (line == 0 || l < line) {
				line = l
			}
		}
		return line
	}
	if d == cedar.Deny {
		return answer{policy.Deny, first("")} // 0: nothing permitted
	}
	granted := false
	for _, r := range diag.Reasons {
		granted = granted || t.grants[r.PolicyID]
	}
	if !granted {
		return answer{policy.Deny, 0}
	}
	if l := first(policy.RequireApproval); l != 0 {
		return answer{policy.RequireApproval, l}
	}
	return answer{policy.Allow, first(policy.Allow)}
}

// scopes resolves which subjects' rules apply to identity on tool, as
// Mandate does: the identity's own rules for the tool if it has any, else
// those of its nearest roles that have some.
func scopes(p *policy.Policy, identity, tool string) []string {
	has := map[string]bool{}
	for _, r := range p.Rules {
		if r.Tool == tool {
			has[r.Subject] = true
		}
	}
	parents := map[string][]string{}
	for _, g := range p.Grants {
		parents[g.Member] = append(parents[g.Member], g.Role)
	}
	level, seen := []string{identity}, map[string]bool{identity: true}
	for len(level) > 0 {
		var found, next []string
		for _, s := range level {
			if has[s] {
				found = append(found, s)
			}
			for _, parent := range parents[s] {
				if !seen[parent] {
					seen[parent] = true
					next = append(next, parent)
				}
			}
		}
		if len(found) > 0 {
			return found
		}
		level = next
	}
	return nil
}

func identities(p *policy.Policy) []string {
	var out []string
	for _, n := range p.Names() {
		if p.IsIdentity(n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func tools() []string {
	var out []string
	for t := range policy.Tools {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

func translate(p *policy.Policy) (*translation, error) {
	t := &translation{entities: cedar.EntityMap{}, lines: map[cedar.PolicyID]int{}, effect: map[cedar.PolicyID]string{}, grants: map[cedar.PolicyID]bool{}}
	for _, id := range identities(p) {
		uid := cedar.NewEntityUID("Agent", cedar.String(id))
		var parents []cedar.EntityUID
		for _, tool := range tools() {
			for _, s := range scopes(p, id, tool) {
				parents = append(parents, cedar.NewEntityUID("Scope", cedar.String(s+"|"+tool)))
			}
		}
		t.entities[uid] = cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(parents...)}
	}
	var b strings.Builder
	for _, r := range p.Rules {
		if r.Tenant != "" {
			return nil, fmt.Errorf("line %d: tenants are not translated", r.Line)
		}
		cond, err := cedarCond(r.Cond)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", r.Line, err)
		}
		principal := fmt.Sprintf("principal in Scope::%q", r.Subject+"|"+r.Tool)
		if r.Subject == "*" {
			principal = "principal is Agent"
		}
		effect := "permit"
		if r.Effect == policy.Deny {
			effect = "forbid"
		}
		grants := r.Subject != "*" || r.Effect == policy.Allow
		fmt.Fprintf(&b, "@line(%q)\n@effect(%q)\n@grants(%q)\n%s (%s, action == Action::%q, resource) when { %s };\n\n",
			strconv.Itoa(r.Line), r.Effect, strconv.FormatBool(grants), effect, principal, r.Tool, cond)
	}
	t.text = b.String()
	ps, err := cedar.NewPolicySetFromBytes("policy.cedar", []byte(t.text))
	if err != nil {
		return nil, fmt.Errorf("cedar: %v\n%s", err, t.text)
	}
	t.ps = ps
	for id, pol := range ps.All() {
		a := pol.Annotations()
		line, _ := strconv.Atoi(string(a["line"]))
		t.lines[id], t.effect[id], t.grants[id] = line, string(a["effect"]), string(a["grants"]) == "true"
	}
	if os.Getenv("CEDAR_PRINT") != "" {
		fmt.Println(t.text)
	}
	return t, nil
}

var token = regexp.MustCompile(`\s*(&&|\|\||<=|>=|==|!=|[<>+\-()]|'[^']*'|[0-9]+(?:\.[0-9]+)?|[a-z_][a-z0-9_]*)`)

// cedarCond translates a condition of the shapes the shipped policy uses.
func cedarCond(cond string) (string, error) {
	var out []string
	rest := cond
	for strings.TrimSpace(rest) != "" {
		m := token.FindStringSubmatchIndex(rest)
		if m == nil || m[0] != 0 {
			return "", fmt.Errorf("cannot translate %q at %q", cond, rest)
		}
		tok := rest[m[2]:m[3]]
		rest = rest[m[1]:]
		switch {
		case tok == "true" || tok == "false":
			out = append(out, tok)
		case strings.HasPrefix(tok, "'"):
			out = append(out, strconv.Quote(strings.Trim(tok, "'")))
		case tok[0] >= '0' && tok[0] <= '9':
			f, err := strconv.ParseFloat(tok, 64)
			if err != nil {
				return "", err
			}
			out = append(out, strconv.FormatInt(scale(f), 10))
		case tok[0] >= 'a' && tok[0] <= 'z':
			out = append(out, "context."+tok)
		default:
			out = append(out, tok)
		}
	}
	return strings.Join(out, " "), nil
}

func scale(f float64) int64 { return int64(math.Round(f * 100)) }

// request is one decision, as each engine is asked it.
type request struct {
	mandate policy.Request
	cedar   cedar.Request
	mix     bool // one of BenchmarkDecide's four
}

func newRequest(agent, tool string, attrs map[string]any) request {
	ctx := cedar.RecordMap{}
	for k, v := range attrs {
		switch v := v.(type) {
		case float64:
			ctx[cedar.String(k)] = cedar.Long(scale(v))
		case string:
			ctx[cedar.String(k)] = cedar.String(v)
		}
	}
	return request{
		mandate: policy.Request{Agent: agent, Tool: tool, Attrs: attrs},
		cedar: cedar.Request{Principal: cedar.NewEntityUID("Agent", cedar.String(agent)), Action: cedar.NewEntityUID("Action", cedar.String(tool)),
			Resource: cedar.NewEntityUID("Tool", cedar.String(tool)), Context: cedar.NewRecord(ctx)},
	}
}

// requests is every identity × tool × a grid of facts with every attribute
// the tool supplies.
func requests(p *policy.Policy) []request {
	refund := func(amount, refundable, age, used, count30 float64) map[string]any {
		return map[string]any{policy.AttrAmount: amount, policy.AttrCurrency: "USD", policy.AttrOrderTotal: 5000.0,
			policy.AttrOrderRefunded: 5000 - refundable, policy.AttrOrderRefundable: refundable, policy.AttrOrderStatus: "delivered",
			policy.AttrCustomerAgeDays: age, policy.AttrAgentRefunded24h: used, policy.AttrAgentRefunds24h: 1.0, policy.AttrCustomerRefunds30d: count30}
	}
	var out []request
	// BenchmarkDecide's four (policy/bench_test.go).
	for _, r := range []request{
		newRequest("demo-agent", "refund_order", refund(30, 5000, 400, 0, 0)),
		newRequest("demo-agent", "refund_order", refund(120, 5000, 400, 0, 0)),
		newRequest("demo-agent", "refund_order", refund(300, 5000, 400, 0, 0)),
		newRequest("demo-agent", "get_order", map[string]any{}),
	} {
		r.mix = true
		out = append(out, r)
	}
	for _, id := range identities(p) {
		for _, tool := range tools() {
			var sets []map[string]any
			switch strings.TrimPrefix(tool, policy.ApprovalPrefix) {
			case "refund_order":
				for _, amount := range []float64{0.01, 30, 50, 50.01, 120, 200, 200.01, 499, 500, 1999, 2000, 2500} {
					for _, age := range []float64{2, 6.99, 7, 400} {
						for _, used := range []float64{0, 480, 4990} {
							sets = append(sets, refund(amount, 1000, age, used, float64(len(sets)%4)))
						}
					}
				}
			case "cancel_order":
				for _, status := range []string{"pending", "processing", "shipped", "delivered", "cancelled"} {
					sets = append(sets, map[string]any{policy.AttrCurrency: "EUR", policy.AttrOrderTotal: 80.0, policy.AttrOrderRefunded: 0.0,
						policy.AttrOrderStatus: status, policy.AttrCustomerAgeDays: 30.0, policy.AttrAgentCancellations1h: 2.0})
				}
			case "update_account":
				for _, field := range []string{"phone", "email", "name", "shipping_address", "password"} {
					sets = append(sets, map[string]any{policy.AttrField: field, policy.AttrCustomerAgeDays: 3.0})
				}
			default:
				sets = append(sets, map[string]any{})
			}
			for _, attrs := range sets {
				out = append(out, newRequest(id, tool, attrs))
			}
		}
	}
	return out
}
