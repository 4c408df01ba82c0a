package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestPolicyExplainUsesRealCounters: after three refunds to cus_ada, the
// live guard sends a fourth to a person (customer_refunds_30d >= 3).
// explain with --db, or beside the default mandate.db, counts as the guard
// does and says so; without a database it says the counters are zero and
// why, instead of passing zeros off as real.
func TestPolicyExplainUsesRealCounters(t *testing.T) {
	ctx := context.Background()
	t.Setenv("MANDATE_DB", "")
	os.Unsetenv("MANDATE_DB") // restored by t.Setenv's cleanup
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	handlers, _, closeAll := shippedToolHandlers(t, dbPath, storePath)
	refund := handlers["refund_order"]
	for _, amount := range []string{"40.00", "45.00", "50.00"} { // 135.00 USD
		res, err := refund(tools.WithAgent(ctx, "demo-agent"), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
			Arguments: map[string]any{"order_id": "ord_1002", "amount": amount, "reason": "late"}}})
		if err != nil || res.StructuredContent.(*tools.ActionResult).Decision != policy.Allow {
			t.Fatalf("setup refund %s: %v %+v", amount, err, res.StructuredContent)
		}
	}
	closeAll()

	args := []string{"policy", "explain", "--model", polModel, "--policy", polPolicy, "--store", storePath,
		"--agent", "demo-agent", "--tool", "refund_order", "--args", `{"order_id":"ord_1001","amount":"30.00","reason":"damaged"}`}
	tests := []struct {
		name  string
		extra []string
		want  []string
	}{
		{"without --db the counters are zero, and it says so", nil,
			[]string{"decision: allow", "agent_refunded_24h = 0", "usage:    zero, not counted: no database at mandate.db", "rates:    1 USD = 1 USD (rates version "}},
		{"with --db the counters are the guard's", []string{"--db", dbPath},
			[]string{"decision: require_approval", "customer_refunds_30d >= 3", "agent_refunded_24h = 135", "customer_refunds_30d = 3",
				"usage:    counted in " + dbPath + " now, as the guard would count this call by demo-agent: agent_refunded_24h = 135, agent_refunds_24h = 3, customer_refunds_30d = 3"}},
		{"a counter set by hand is named as such", []string{"--db", dbPath, "--attrs", `{"customer_refunds_30d": 0}`},
			[]string{"decision: allow", "usage:    set by --attrs, not counted: customer_refunds_30d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := polRun(t, append(append([]string{}, args...), tt.extra...)...)
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
	// -h shows --db's default, mandate.db: run where it exists, explain
	// counts in it as a server there would (it once read it only when
	// named, and showed zeros).
	t.Run("the default mandate.db is read when it exists", func(t *testing.T) {
		model, err := filepath.Abs(polModel)
		if err != nil {
			t.Fatal(err)
		}
		pol, err := filepath.Abs(polPolicy)
		if err != nil {
			t.Fatal(err)
		}
		t.Chdir(dir) // where dbPath is mandate.db
		out, err := polRun(t, "policy", "explain", "--model", model, "--policy", pol, "--store", storePath,
			"--agent", "demo-agent", "--tool", "refund_order", "--args", `{"order_id":"ord_1001","amount":"30.00","reason":"damaged"}`)
		if err != nil || !strings.Contains(out, "decision: require_approval") || !strings.Contains(out, "usage:    counted in mandate.db now") {
			t.Fatalf("explain beside mandate.db: %v\n%s", err, out)
		}
	})
	t.Run("a --db that does not exist is an error", func(t *testing.T) {
		if _, err := polRun(t, append(append([]string{}, args...), "--db", filepath.Join(dir, "nope.db"))...); err == nil {
			t.Fatal("explain with a missing --db succeeded")
		}
	})

	t.Run("replay says what it did not re-simulate", func(t *testing.T) {
		out, err := polRun(t, "policy", "replay", "--db", dbPath, "--model", polModel, "--policy", polPolicy)
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, out)
		}
		for _, w := range []string{"not re-simulated:", "usage counters (agent_refunded_24h, agent_refunds_24h, customer_refunds_30d, agent_cancellations_1h) are as recorded at the time",
			"base-currency amounts (amount_base, order_total_base) in 3 attempts are as converted then"} {
			if !strings.Contains(out, w) {
				t.Fatalf("replay output lacks %q:\n%s", w, out)
			}
		}
	})
}

// TestRatesCommand: set writes the file atomically and keeps comments;
// show reads it; a bad rate changes nothing and exits non-zero.
func TestRatesCommand(t *testing.T) {
	t.Setenv("MANDATE_RATES", "")
	os.Unsetenv("MANDATE_RATES")
	path := filepath.Join(t.TempDir(), "rates.csv")
	out, err := polRun(t, "rates", "set", "EUR", "1.1111", "--rates", path)
	if err != nil || !strings.Contains(out, "1 EUR = 1.1111 USD (was 1.0842)") {
		t.Fatalf("rates set: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "# Mandate's exchange rates.") || !strings.Contains(string(data), "\nEUR, 1.1111\n") {
		t.Fatalf("the written file lost its comments or the rate:\n%s", data)
	}
	out, err = polRun(t, "rates", "show", "--rates", path)
	if err != nil || !strings.Contains(out, "base USD") || !strings.Contains(out, "  EUR  1.1111") || !strings.Contains(out, "  KWD  3.2550") {
		t.Fatalf("rates show: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"EUR", "1.1e2"}, {"USD", "2"}, {"XYZ", "1"}} {
		if out, err := polRun(t, "rates", "set", bad[0], bad[1], "--rates", path); err == nil {
			t.Fatalf("rates set %v succeeded:\n%s", bad, out)
		}
	}
	if after, _ := os.ReadFile(path); string(after) != string(data) {
		t.Fatal("a refused rates set changed the file")
	}
	if _, err := polRun(t, "rates", "set", "EUR"); err == nil {
		t.Fatal("rates set with one argument succeeded")
	}
	// Every deciding command refuses a rates file that does not load.
	broken := filepath.Join(t.TempDir(), "broken.csv")
	if err := os.WriteFile(broken, []byte("EUR, 1.08\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := polRun(t, "policy", "test", "--model", polModel, "--policy", polPolicy, "--rates", broken, "../../testdata/policy-cases.yaml"); err == nil || !strings.Contains(out+err.Error(), "no base currency") {
		t.Fatalf("policy test with broken rates: %v\n%s", err, out)
	}
}

// TestServeRatesReload runs the built binary: a GBP refund is refused while
// the rates have no GBP; 300.00 EUR is over the support agent's 200.00
// limit at 1.0842; after `mandate rates set` (another process) the running
// server converts with the new rates without a restart.
func TestServeRatesReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ratesPath := filepath.Join(dir, "rates.csv")
	if err := os.WriteFile(ratesPath, []byte("base, USD\nEUR, 1.0842\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent", "--db", filepath.Join(dir, "mandate.db"),
		"--store", filepath.Join(dir, "store.db"), "--rates", ratesPath, "--model", polModel, "--policy", polPolicy)
	refund := func(order, amount string) actionStatus {
		t.Helper()
		var out actionStatus
		decode(t, call(t, c, "refund_order", map[string]any{"order_id": order, "amount": amount, "reason": "rates reload test"}), &out)
		return out
	}
	if out := refund("ord_1008", "10.00"); out.Decision != policy.Deny || !strings.Contains(out.Message, "GBP has no exchange rate to USD") {
		t.Fatalf("GBP refund without a rate: %+v, want a deny that names the missing rate", out)
	}
	if out := refund("ord_1020", "300.00"); out.Decision != policy.Deny || !strings.Contains(out.Rule, "amount_base > 200.00, deny") {
		t.Fatalf("300.00 EUR at 1.0842: %+v, want deny by the 200.00 base limit", out)
	}
	for _, set := range [][]string{{"EUR", "0.5"}, {"GBP", "1.2650"}} {
		if _, stderr, err := runMandate(t, nil, "rates", "set", set[0], set[1], "--rates", ratesPath); err != nil {
			t.Fatalf("rates set %v: %v\n%s", set, err, stderr)
		}
	}
	// The server reloads about 100 ms after the change; each try before
	// that is one more refused (and audited) attempt, which changes nothing.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := refund("ord_1020", "300.00") // 150.00 USD at 0.5
		if out.Decision == policy.RequireApproval {
			break
		}
		if out.Decision != policy.Deny || time.Now().After(deadline) {
			t.Fatalf("300.00 EUR after rates set EUR 0.5: %+v, want require_approval once reloaded", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The two edits may reach the server as two reloads: wait for the GBP
	// one too.
	for {
		out := refund("ord_1008", "10.00")
		if out.Decision == policy.Allow {
			break
		}
		if !strings.Contains(out.Message, "GBP has no exchange rate") || time.Now().After(deadline) {
			t.Fatalf("GBP refund with a rate: %+v, want allow", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRatesSetMistakes: a bad currency or rate, a negative rate among
// them, is a usage error (exit status 2) saying what is wrong, and writes
// nothing; a rates file that does not load is a failure (exit status 1).
func TestRatesSetMistakes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rates.csv")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"EUR", "abc"}, `rate "abc" is not a decimal number`},
		{[]string{"EUR", "-1"}, `rate "-1" must be greater than zero`},
		{[]string{"EUR", "-1.5"}, `rate "-1.5" must be greater than zero`},
		{[]string{"EUR", "0"}, `rate "0" must be greater than zero`},
		{[]string{"XYZ", "1"}, `unknown currency "XYZ"`},
		{[]string{"USD", "2"}, "USD is the base currency"},
		{[]string{"EUR"}, "give a currency code and a rate"},
		{[]string{"EUR", "1", "2"}, "give a currency code and a rate"},
	} {
		for _, args := range [][]string{
			append([]string{"rates", "set", "--rates", path}, tt.args...),
			append(append([]string{"rates", "set"}, tt.args...), "--rates", path),
		} {
			stdout, stderr, status := runInProcess(args...)
			if status != 2 || stdout != "" || !strings.Contains(stderr, "rates set: "+tt.want) || strings.Contains(stderr, "flag provided") {
				t.Errorf("mandate %s: exit status %d, stdout %q, stderr %q; want 2 and %q", strings.Join(args, " "), status, stdout, stderr, tt.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("mandate %s wrote %s (%v)", strings.Join(args, " "), path, err)
			}
		}
	}
	if err := os.WriteFile(path, []byte("EUR, 1.08\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, status := runInProcess("rates", "set", "EUR", "1.1", "--rates", path); status != 1 || !strings.Contains(stderr, "no base currency") {
		t.Fatalf("rates set on a broken file: exit status %d, stderr %q; want 1 and the file's problem", status, stderr)
	}
}
