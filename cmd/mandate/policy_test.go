package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// The shipped model and policy, from the repo root.
var (
	polModel  = filepath.Join("..", "..", "model.conf")
	polPolicy = filepath.Join("..", "..", "policy.csv")
)

// polRun runs mandate in process and returns its stdout.
func polRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return stdout.String() + stderr.String(), err
}

// TestPolicyCheckRefusesMalformed runs `mandate policy check` over each
// malformed file in testdata/policies: each must fail with a message that
// names the file and the line.
func TestPolicyCheckRefusesMalformed(t *testing.T) {
	dir := filepath.Join("testdata", "policies")
	tests := []struct {
		file string
		want string // after "FILE:"
	}{
		{"effect-typo.csv", `4: error: unknown effect "alow": use allow, deny or require_approval`},
		{"effect-comment.csv", `4: error: text after the effect "allow": a # comment must be on its own line`},
		{"effect-empty.csv", `4: error: unknown effect ""`},
		{"effect-capital.csv", `4: error: unknown effect "Allow"`},
		{"unknown-tool.csv", `4: error: unknown tool "refund_orders"; tools are`},
		{"bare-quote.csv", `4: error: column 44: a " inside a field that does not start with one; put the whole field in double quotes and double each quote inside it, or write text in single quotes ('x'); lines after this one were not checked`},
		{"unterminated-quote.csv", `4: error: the quoted field that starts on this line does not end with a " before a comma or the end of the line (seen at line 4, column`},
		{"unquoted-comma.csv", `4: error: a rule has 5 fields (p, subject, tool, condition, effect, and optionally a tenant), this line has 6; quote a condition that contains a comma`},
		{"too-few-fields.csv", `4: error: a rule has 5 fields (p, subject, tool, condition, effect, and optionally a tenant), this line has 4`},
		{"unknown-attribute.csv", `4: error: condition "amout <= 50.00": unknown attribute "amout"; this tool has amount,`},
		{"attribute-of-another-tool.csv", `4: error: condition "field == 'email'": unknown attribute "field"`},
		{"lookup-with-attribute.csv", `4: error: condition "order_status == 'pending'": unknown attribute "order_status": this tool has no attributes, use true`},
		{"text-compared-as-number.csv", `4: error: condition "order_status > 5": compares order_status (text) with 5`},
		{"not-a-boolean.csv", `4: error: condition "amount + 1": is not true or false`},
		{"syntax-error.csv", `4: error: condition "amount <=": Unexpected end of expression`},
		{"empty-condition.csv", `4: error: empty condition: write true for a rule without one`},
		{"duplicate.csv", `4: error: duplicate of the rule on line 3`},
		{"empty-subject.csv", `4: error: empty subject: name an identity, a role, or * for everyone`},
		{"subject-with-space.csv", `4: error: subject "support agent" cannot contain spaces or #`},
		{"grant-two-fields.csv", `4: error: a role grant has 3 fields (g, member, role, and optionally a tenant), this line has 2`},
		{"grant-star.csv", `4: error: * means everyone in rules; it cannot be granted or be a role`},
		{"grant-self.csv", `4: error: "support_agent" cannot be a member of itself`},
		{"grant-comment.csv", `4: error: identity and role names cannot contain spaces or #; a # comment must be on its own line`},
		{"unknown-line-type.csv", `4: error: a line starts with p (a rule) or g (a role grant), not "r"`},
		{"role-chain-too-deep.csv", `4: error: the role chain from "r0" is 12 links deep; the limit is 10`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			out, err := polRun(t, "policy", "check", "--model", polModel, "--policy", path)
			if err == nil {
				t.Fatalf("check accepted %s:\n%s", tt.file, out)
			}
			if want := path + ":" + tt.want; !strings.Contains(out, want) {
				t.Fatalf("output lacks %q:\n%s", want, out)
			}
			if !strings.Contains(out, "does not load") {
				t.Fatalf("no summary:\n%s", out)
			}
		})
	}
	// Every malformed file in the directory is in the table.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, tt := range tests {
		listed[tt.file] = true
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".csv") && !strings.HasPrefix(n, "warn-") && !listed[n] {
			t.Errorf("%s is not in the table", n)
		}
	}
}

func TestPolicyCheckModel(t *testing.T) {
	dir := filepath.Join("testdata", "policies")
	tests := []struct{ file, want string }{
		{"wrong-rule.conf", ":6: error: p must be defined as p = sub, tool, cond, eft"},
		{"wrong-request.conf", ":3: error: r must be defined as r = sub, tool, attrs"},
		{"missing-matchers.conf", ": error: missing required sections: matchers"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			out, err := polRun(t, "policy", "check", "--model", path, "--policy", polPolicy)
			if err == nil || !strings.Contains(out, path+tt.want) {
				t.Fatalf("err = %v, want output with %q:\n%s", err, path+tt.want, out)
			}
		})
	}
}

func TestPolicyCheckWarnings(t *testing.T) {
	dir := filepath.Join("testdata", "policies")
	tests := []struct{ file, want string }{
		{"warn-never-matches.csv", `:4: warning: condition "amount > 10 && amount < 5" is false for every value probed`},
		{"warn-overridden.csv", ":4: warning: always overridden by line 5 (p, *, cancel_order, true, deny)"},
		{"warn-role-typo.csv", `:4: warning: role "suport_agent" reaches no rules`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			out, err := polRun(t, "policy", "check", "--model", polModel, "--policy", path)
			if err != nil || !strings.Contains(out, path+tt.want) {
				t.Fatalf("without --strict: err = %v, want success with %q:\n%s", err, path+tt.want, out)
			}
			if _, err := polRun(t, "policy", "check", "--strict", "--model", polModel, "--policy", path); err == nil {
				t.Fatal("--strict accepted a policy with warnings")
			}
		})
	}
}

func TestPolicyCheckShipped(t *testing.T) {
	out, err := polRun(t, "policy", "check", "--strict", "--model", polModel, "--policy", polPolicy)
	if err != nil {
		t.Fatalf("the shipped policy fails check --strict: %v\n%s", err, out)
	}
	if !strings.Contains(out, "0 errors, 0 warnings") || strings.Contains(out, ": note: ") {
		t.Fatalf("no clean summary, or notes without --notes:\n%s", out)
	}
	out, err = polRun(t, "policy", "check", "--notes", "--model", polModel, "--policy", polPolicy)
	if err != nil || !strings.Contains(out, ": note: does not apply to senior_agent") {
		t.Fatalf("--notes: err = %v\n%s", err, out)
	}

	// The README's auditor (`g, carol, auditor`) has no rules by design:
	// the shipped policy with her still passes --strict.
	shipped, err := os.ReadFile(polPolicy)
	if err != nil {
		t.Fatal(err)
	}
	withAuditor := filepath.Join(t.TempDir(), "policy.csv")
	if err := os.WriteFile(withAuditor, append(shipped, "g, carol, auditor\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = polRun(t, "policy", "check", "--strict", "--notes", "--model", polModel, "--policy", withAuditor)
	if err != nil || !strings.Contains(out, `note: role "auditor" has no rules, by design`) || strings.Contains(out, ": warning:") {
		t.Fatalf("the shipped policy with an auditor: err = %v\n%s", err, out)
	}
}

// polStore creates the demo store in a temp dir and returns its path.
func polStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	st, _, err := store.OpenSeeded(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	return path
}

func TestPolicyExplain(t *testing.T) {
	storePath := polStore(t)
	base := []string{"policy", "explain", "--model", polModel, "--policy", polPolicy, "--store", storePath}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"small refund from the store's facts", []string{"--agent", "demo-agent", "--tool", "refund_order", "--args", `{"order_id":"ord_1001","amount":"30.00","reason":"damaged"}`},
			[]string{"decision: allow", "only " + polPolicy + ":", "=> " + polPolicy + ":", "amount_base <= 50.00, allow", "order_status = 'processing'", "order_total = 120", "amount = 30"}},
		{"the store's partial refund leaves 50.00", []string{"--agent", "demo-agent", "--tool", "refund_order", "--args", `{"order_id":"ord_1006","amount":"60.00","reason":"damaged"}`},
			[]string{"decision: deny", "amount > order_refundable, deny", "order_refundable = 50", "a matching deny always wins"}},
		{"a usage counter overridden", []string{"--agent", "demo-agent", "--tool", "refund_order", "--args", `{"order_id":"ord_1001","amount":"30.00","reason":"damaged"}`, "--attrs", `{"agent_refunded_24h":490}`},
			[]string{"decision: require_approval", "agent_refunded_24h = 490"}},
		{"senior's own rules replace the inherited ones", []string{"--agent", "senior-bot", "--tool", "update_account", "--args", `{"customer_id":"cus_ada","field":"email","value":"a@b.example","reason":"Old mailbox closed"}`},
			[]string{"decision: allow", "senior-bot has support_agent, but the rules of senior_agent for update_account replace those it inherits"}},
		{"attributes given directly", []string{"--agent", "demo-agent", "--tool", "cancel_order", "--attrs", `{"order_status":"shipped","currency":"USD","order_total":1,"order_refunded":0,"customer_age_days":100,"agent_cancellations_1h":0}`},
			[]string{"decision: deny", "order_status == 'shipped'"}},
		{"unknown order: facts fail, so deny", []string{"--agent", "demo-agent", "--tool", "refund_order", "--args", `{"order_id":"ord_404","amount":"1.00","reason":"x"}`},
			[]string{"decision: deny", "facts could not be loaded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := polRun(t, append(base, tt.args...)...)
			if err != nil {
				t.Fatalf("explain: %v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("a store that does not exist is an error, not a new store", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope.db")
		_, err := polRun(t, "policy", "explain", "--store", missing, "--agent", "demo-agent", "--tool", "get_order", "--args", `{"order_id":"ord_1001"}`)
		if err == nil || !strings.Contains(err.Error(), "no store at") {
			t.Fatalf("err = %v", err)
		}
		if _, serr := os.Stat(missing); serr == nil {
			t.Fatal("explain created the store")
		}
	})
}

func TestPolicyTestShippedCases(t *testing.T) {
	out, err := polRun(t, "policy", "test", "--model", polModel, "--policy", polPolicy, filepath.Join("..", "..", "testdata", "policy-cases.yaml"))
	if err != nil {
		t.Fatalf("the shipped cases fail: %v\n%s", err, out)
	}
	if !strings.Contains(out, " 0 failed") {
		t.Fatalf("no summary:\n%s", out)
	}
}

func TestPolicyTestReportsMismatch(t *testing.T) {
	dir := t.TempDir()
	cases := filepath.Join(dir, "cases.yaml")
	if err := os.WriteFile(cases, []byte(`store: demo
cases:
  - name: right
    agent: demo-agent
    tool: cancel_order
    args: {order_id: ord_1004, reason: asked}
    expect: allow
  - name: wrong
    agent: demo-agent
    tool: refund_order
    args: {order_id: ord_1001, amount: "80.00", reason: damaged}
    expect: allow
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := polRun(t, "policy", "test", "--model", polModel, "--policy", polPolicy, cases)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 cases failed") {
		t.Fatalf("err = %v\n%s", err, out)
	}
	for _, w := range []string{cases + ":8: wrong", "- want: allow", "+ got:  require_approval by " + polPolicy + ":", "amount=80"} {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, ": right") {
		t.Fatalf("a passing case was reported without -v:\n%s", out)
	}
}

// shippedToolHandlers opens a real database at dbPath and the seeded demo
// store at storePath, records the shipped policy as live (as a server does
// before deciding), and returns every tool's handler, deciding under it,
// with the shipped policy text. closeAll closes the database, then the
// store, so that the CLI under test can open them.
func shippedToolHandlers(t *testing.T, dbPath, storePath string) (handlers map[string]func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error), shipped []byte, closeAll func()) {
	t.Helper()
	ctx := context.Background()
	modelData, err := os.ReadFile(polModel)
	if err != nil {
		t.Fatal(err)
	}
	shipped, err = os.ReadFile(polPolicy)
	if err != nil {
		t.Fatal(err)
	}
	live, err := policy.Load(policy.Source{Name: "model.conf", Data: modelData}, policy.Source{Name: "policy.csv", Data: shipped})
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := store.OpenSeeded(ctx, storePath)
	if err != nil {
		t.Fatal(err)
	}
	// As a server does before deciding: its policy and rates are the live ones.
	if err := db.RecordPolicy(ctx, &storage.PolicyLoad{Version: live.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, ratesLoad(rates.Default(), "test", "")); err != nil {
		t.Fatal(err)
	}
	deps := &tools.Deps{Policy: policy.NewEngine(live), DB: db, Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}
	handlers = map[string]func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error){}
	for _, s := range tools.ServerTools(deps) {
		handlers[s.Tool.Name] = s.Handler
	}
	return handlers, shipped, func() {
		db.Close()
		st.Close()
	}
}

// TestPolicyReplay records real traffic through the guard with real
// storage and the demo store, then replays it under a candidate that
// tightens refunds.
func TestPolicyReplay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	handlers, shipped, closeAll := shippedToolHandlers(t, dbPath, filepath.Join(dir, "store.db"))
	agentCtx := tools.WithAgent(ctx, "demo-agent")
	calls := []struct {
		tool string
		args map[string]any
		want string // the live decision
	}{
		{"refund_order", map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "damaged"}, policy.Allow},
		{"refund_order", map[string]any{"order_id": "ord_1004", "amount": "45.00", "reason": "late"}, policy.Allow},
		{"refund_order", map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "damaged"}, policy.Allow},
		{"refund_order", map[string]any{"order_id": "ord_1002", "amount": "80.00", "reason": "late"}, policy.RequireApproval},
		{"refund_order", map[string]any{"order_id": "ord_1002", "amount": "300.00", "reason": "late"}, policy.Deny},
		{"cancel_order", map[string]any{"order_id": "ord_1003", "reason": "asked"}, policy.Deny},
		{"get_order", map[string]any{"order_id": "ord_1001"}, policy.Allow},
	}
	for _, c := range calls {
		res, err := handlers[c.tool](agentCtx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: c.tool, Arguments: c.args}})
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if ar, ok := res.StructuredContent.(*tools.ActionResult); ok {
			got = ar.Decision
		} else if !res.IsError {
			got = policy.Allow
		}
		if got != c.want {
			t.Fatalf("%s %v: live decision %q, want %q", c.tool, c.args, got, c.want)
		}
	}
	closeAll()

	// The candidate allows only 20.00 without approval.
	tighten := strings.NewReplacer(
		"p, support_agent, refund_order, amount_base <= 50.00, allow", "p, support_agent, refund_order, amount_base <= 20.00, allow",
		"amount_base > 50.00 && amount_base <= 200.00, require_approval", "amount_base > 20.00 && amount_base <= 200.00, require_approval")
	candidateText := tighten.Replace(string(shipped))
	if !strings.Contains(candidateText, "amount_base <= 20.00, allow") || !strings.Contains(candidateText, "amount_base > 20.00 && amount_base <= 200.00") {
		t.Fatal("the shipped policy no longer has the refund rules this test tightens")
	}
	candidate := filepath.Join(dir, "candidate.csv")
	if err := os.WriteFile(candidate, []byte(candidateText), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", candidate)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	for _, w := range []string{
		"replayed 7 attempts of the last 24h0m0s",
		"unchanged                    5",
		"allow -> require_approval    2",
		"allow -> deny                0",
		"deny -> allow                0",
		"2 would change:",
		`{"amount":"30.00","order_id":"ord_1001","reason":"damaged"}`,
		`{"amount":"45.00","order_id":"ord_1004","reason":"late"}`,
		"now require_approval by " + candidate + ":",
	} {
		if !strings.Contains(out, w) {
			t.Fatalf("replay output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, `"amount":"10.00"`) {
		t.Fatalf("the 10.00 refund is still allowed under the candidate but was listed:\n%s", out)
	}

	t.Run("explain a recorded decision", func(t *testing.T) {
		rdb, err := storage.Open(ctx, dbPath)
		if err != nil {
			t.Fatal(err)
		}
		var id string
		_ = rdb.Records(ctx, storage.Filter{Tool: "refund_order", Decision: policy.Allow}, func(r *storage.Record) error {
			if id == "" && r.Phase == storage.PhaseAttempt {
				id = r.ActionID
			}
			return nil
		})
		rdb.Close()
		if id == "" {
			t.Fatal("no allowed refund attempt recorded")
		}
		out, err := polRun(t, "policy", "explain", "--action", id, "--db", dbPath, "--model", polModel, "--policy", polPolicy)
		if err != nil || !strings.Contains(out, "recorded: "+id+" refund_order by demo-agent") || !strings.Contains(out, "decision: allow") ||
			!strings.Contains(out, "amount = 30") || strings.Contains(out, "note:") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		// Under the candidate, the same recorded facts need approval.
		out, err = polRun(t, "policy", "explain", "--action", id, "--db", dbPath, "--model", polModel, "--policy", candidate)
		if err != nil || !strings.Contains(out, "decision: require_approval") || !strings.Contains(out, "note:     the policy loaded now is version") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		if _, err := polRun(t, "policy", "explain", "--action", "act_nope", "--db", dbPath); err == nil {
			t.Fatal("an unknown action was explained")
		}
	})
	t.Run("the shipped policy replays unchanged", func(t *testing.T) {
		out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", polPolicy, "--since", "0")
		if err != nil || !strings.Contains(out, "unchanged                    7") || strings.Contains(out, "would change") {
			t.Fatalf("err = %v\n%s", err, out)
		}
	})
	t.Run("--since 0 replays the whole trail", func(t *testing.T) {
		out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", candidate, "--since", "0")
		if err != nil || !strings.Contains(out, "replayed 7 attempts of the whole trail in ") {
			t.Fatalf("err = %v\n%s", err, out)
		}
	})
	t.Run("--since takes whole days", func(t *testing.T) {
		out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", candidate, "--since", "7d")
		if err != nil || !strings.Contains(out, "replayed 7 attempts of the last 168h0m0s in ") {
			t.Fatalf("err = %v\n%s", err, out)
		}
	})
	t.Run("a negative or unreadable --since is a usage error", func(t *testing.T) {
		for _, v := range []string{"-1h", "-7d", "0d", "1 day", "soon"} {
			out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", candidate, "--since", v)
			if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--since") || !strings.Contains(err.Error(), "whole days such as 7d") || strings.Contains(out, "replayed") {
				t.Fatalf("--since %s: err = %v, want a usage error naming --since and how to write it\n%s", v, err, out)
			}
		}
	})
	t.Run("--since leaves out older attempts", func(t *testing.T) {
		out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", candidate, "--since", "1ns")
		if err != nil || !strings.Contains(out, "replayed 0 attempts") {
			t.Fatalf("err = %v\n%s", err, out)
		}
	})
	t.Run("a missing database is an error", func(t *testing.T) {
		_, err := polRun(t, "policy", "replay", "--db", filepath.Join(dir, "none.db"), "--policy", candidate)
		if err == nil || !strings.Contains(err.Error(), "no audit database") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestFlagsAfterTheFile: store import and policy test take their flags
// before or after the file, as agent key create and rates set do.
func TestFlagsAfterTheFile(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.json")
	if err := os.WriteFile(data, []byte(`{"customers": [{"id": "cus_after", "name": "After Flags", "email": "after@example.com", "created_at": "2024-01-02T03:04:05Z"}], "orders": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := filepath.Join("..", "..", "testdata", "policy-cases.yaml")
	for _, args := range [][]string{
		{"store", "import", data, "--store", filepath.Join(dir, "after.db")},
		{"store", "import", "--store", filepath.Join(dir, "before.db"), data},
		{"policy", "test", cases, "--model", polModel, "--policy", polPolicy},
		{"policy", "test", "--model", polModel, cases, "--policy", polPolicy},
	} {
		if out, err := polRun(t, args...); err != nil {
			t.Errorf("mandate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, name := range []string{"after.db", "before.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("store import did not write --store %s: %v", name, err)
		}
	}
	// Still one file, and "--" ends the flags.
	if _, err := polRun(t, "store", "import", data, data, "--store", filepath.Join(dir, "two.db")); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "unexpected argument") {
		t.Errorf("store import of two files: %v, want a usage error", err)
	}
	if _, err := polRun(t, "policy", "test", "--model", polModel, "--policy", polPolicy, "--", "--store"); err == nil || errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--store") {
		t.Errorf("policy test -- --store: %v, want the file --store not found", err)
	}
}

// TestPolicyReplayKnowsGuardRefusalsAndReverts: replaying the live policy
// against its own trail changes nothing. A suspended agent's call was
// refused before the rules saw it (not replayed), and a person's revert of
// an agent's update_account was decided as revert_update_account (replayed
// and explained as that). A review found both listed as changes.
func TestPolicyReplayKnowsGuardRefusalsAndReverts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	handlers, _, closeAll := shippedToolHandlers(t, dbPath, filepath.Join(dir, "store.db"))
	res, err := handlers["refund_order"](tools.WithAgent(ctx, "demo-agent"), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "damaged"}}})
	if ar, ok := res.StructuredContent.(*tools.ActionResult); err != nil || !ok || ar.Decision != policy.Allow {
		t.Fatalf("refund: %v %+v", err, res)
	}
	closeAll()

	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var allowed *storage.Record
	db.Records(ctx, storage.Filter{Tool: "refund_order"}, func(r *storage.Record) error {
		if r.Phase == storage.PhaseAttempt {
			allowed = r
		}
		return nil
	})
	if allowed == nil {
		t.Fatal("no refund attempt recorded")
	}
	// As the guard records them (guard.go: decide; remediate.go).
	suspended := &storage.Record{Agent: "demo-agent", Tool: "refund_order", Args: allowed.Args, Attrs: allowed.Attrs, ActionID: "act_suspended",
		Phase: storage.PhaseAttempt, Decision: policy.Deny, Outcome: "refused", Rule: "agent suspended: demo-agent is under suspension 1", PolicyVersion: allowed.PolicyVersion}
	revert := &storage.Record{Agent: "alice", Tool: "update_account", ActionID: "act_revert", Phase: storage.PhaseAttempt,
		Args:     []byte(`{"customer_id":"cus_ada","field":"phone","value":"+1 202 555 0143"}`),
		Attrs:    []byte(`{"field":"phone","reverts":"act_agent1","customer_age_days":900}`),
		Decision: policy.Allow, Rule: "policy.csv:56: p, supervisor, revert_update_account, true, allow", PolicyVersion: allowed.PolicyVersion}
	for _, r := range []*storage.Record{suspended, revert} {
		if err := db.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", polPolicy, "--since", "0")
	if err != nil || !strings.Contains(out, "unchanged                    2") || !strings.Contains(out, "not replayed                 1") || strings.Contains(out, "would change") {
		t.Fatalf("replay of the live policy: err = %v\n%s", err, out)
	}
	out, err = polRun(t, "policy", "explain", "--action", "act_revert", "--db", dbPath, "--model", polModel, "--policy", polPolicy)
	if err != nil || !strings.Contains(out, "decision: allow") || !strings.Contains(out, "decided as revert_update_account") {
		t.Fatalf("explain of the revert: err = %v\n%s", err, out)
	}
	out, err = polRun(t, "policy", "explain", "--action", "act_suspended", "--db", dbPath, "--model", polModel, "--policy", polPolicy)
	if err != nil || !strings.Contains(out, "refused this call before the rules were consulted") {
		t.Fatalf("explain of the suspended call: err = %v\n%s", err, out)
	}
}
