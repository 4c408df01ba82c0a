package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

// lineageScript drives the built binary over stdio as demo-agent: a phone
// change, a refund and a cancellation that the rules allow, and an email
// change that waits for a person, which alice approves with the CLI. It
// returns the database and store paths and the action id of each step by
// name.
func lineageScript(t *testing.T, env ...string) (dbPath, storePath string, ids map[string]string) {
	t.Helper()
	dir := t.TempDir()
	dbPath, storePath = filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	demo := startServer(t, "2025-06-18", append([]string{"MANDATE_AGENT=demo-agent"}, env...), "--db", dbPath, "--store", storePath)
	ids = map[string]string{}
	act := func(name, tool string, args map[string]any, want string) {
		t.Helper()
		res := call(t, demo, tool, args)
		var out actionResult
		decode(t, res, &out)
		if out.Status != want {
			t.Fatalf("%s: status %q, want %q: %s", name, out.Status, want, text(res))
		}
		ids[name] = out.ActionID
	}
	act("phone", "update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000111", "reason": "customer asked on a verified call"}, storage.StatusExecuted)
	act("refund", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "late delivery"}, storage.StatusExecuted)
	act("cancel", "cancel_order", map[string]any{"order_id": "ord_1004", "reason": "customer changed their mind"}, storage.StatusExecuted)
	act("email", "update_account", map[string]any{"customer_id": "cus_marie", "field": "email", "value": "marie.curie@example.org", "reason": "verified by a signed letter"}, storage.StatusPending)
	addUsers(t, dbPath, "alice")
	if out, _, err := runMandate(t, []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword},
		"approvals", "approve", ids["email"], "--as", "alice", "--db", dbPath, "--store", storePath); err != nil {
		t.Fatalf("approve: %v\n%s", err, out)
	}
	return dbPath, storePath, ids
}

// outcomeChanges returns the changes of the outcome record of each action.
func outcomeChanges(t *testing.T, dbPath string, ids map[string]string) map[string]*storage.Changes {
	t.Helper()
	out, errOut, err := runMandate(t, nil, "audit", "export", "--db", dbPath)
	if err != nil {
		t.Fatalf("export: %v\n%s", err, errOut)
	}
	got := map[string]*storage.Changes{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r storage.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		for name, id := range ids {
			if r.ActionID != id {
				continue
			}
			if r.Phase != storage.PhaseOutcome {
				if len(r.Changes) != 0 && string(r.Changes) != "null" {
					t.Fatalf("%s: %s record has changes %s; only outcomes carry them", name, r.Phase, r.Changes)
				}
				continue
			}
			c, err := storage.ParseChanges(r.Changes)
			if err != nil || c == nil {
				t.Fatalf("%s: outcome changes %s: %v", name, r.Changes, err)
			}
			got[name] = c
		}
	}
	return got
}

func TestChangesRecordedE2E(t *testing.T) {
	dbPath, _, ids := lineageScript(t)
	got := outcomeChanges(t, dbPath, ids)
	usd := func(minor int64) string {
		b, _ := json.Marshal(mandate.Money{Minor: minor, Currency: "USD"})
		return string(b)
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	tests := []struct {
		name, tool, customer, order string
		fields                      [][3]string // field, before, after as JSON
	}{
		{"phone", "update_account", "cus_ada", "", [][3]string{{"phone", q("+441234567890"), q("+441234000111")}}},
		{"refund", "refund_order", "cus_ada", "ord_1001", [][3]string{{"refunded", usd(0), usd(1000)}, {"refundable", usd(12000), usd(11000)}}},
		{"cancel", "cancel_order", "cus_ada", "ord_1004", [][3]string{{"status", q("pending"), q("cancelled")}}},
		{"email", "update_account", "cus_marie", "", [][3]string{{"email", q("marie@example.fr"), q("marie.curie@example.org")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := got[tt.name]
			if c == nil {
				t.Fatalf("no outcome with changes for %s (%s)", tt.name, ids[tt.name])
			}
			// The embedded store reports the order with each refund, so a
			// refund's before and after come from that answer; the others
			// read before the call.
			source := storage.ChangesReadBeforeCall
			if tt.tool == "refund_order" {
				source = storage.ChangesReported
			}
			if c.Tool != tt.tool || c.CustomerID != tt.customer || c.OrderID != tt.order || c.Source != source {
				t.Fatalf("changes %+v, want tool %s customer %s order %q with source %s", c, tt.tool, tt.customer, tt.order, source)
			}
			if len(c.Fields) != len(tt.fields) {
				t.Fatalf("fields %+v, want %v", c.Fields, tt.fields)
			}
			for i, f := range tt.fields {
				g := c.Fields[i]
				if g.Field != f[0] || string(g.Before) != f[1] || string(g.After) != f[2] {
					t.Fatalf("field %d = %s %s -> %s, want %s %s -> %s", i, g.Field, g.Before, g.After, f[0], f[1], f[2])
				}
			}
			if tt.tool == "refund_order" && !strings.HasPrefix(c.RefundID, "re") {
				t.Fatalf("refund id %q", c.RefundID)
			}
		})
	}
	if out, errOut, err := runMandate(t, nil, "audit", "verify", "--db", dbPath); err != nil {
		t.Fatalf("the chain with changes does not verify: %v\n%s%s", err, out, errOut)
	}
}

// The personal values an export must not show once redacted, and the
// non-personal ones it must still show.
var (
	lineagePII  = []string{"+441234567890", "+441234000111", "marie@example.fr", "marie.curie@example.org"}
	lineageKept = []string{`"field":"status"`, `"before":"pending"`, `"minor":11000`}
)

func TestChangesRedactedInEveryFormat(t *testing.T) {
	dbPath, _, ids := lineageScript(t)
	for _, format := range []string{"jsonl", "csv", "ocsf"} {
		t.Run(format, func(t *testing.T) {
			plain, _, err := runMandate(t, nil, "audit", "export", "--db", dbPath, "--format", format)
			if err != nil {
				t.Fatal(err)
			}
			// The export shows the changes at all: unredacted, the values are there.
			for _, v := range append([]string{"marie@example.fr", "+441234567890"}, ids["email"]) {
				if !strings.Contains(plain, v) {
					t.Fatalf("unredacted %s export lacks %q", format, v)
				}
			}
			out, _, err := runMandate(t, nil, "audit", "export", "--db", dbPath, "--format", format, "--redact")
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range lineagePII {
				if strings.Contains(out, v) {
					t.Fatalf("redacted %s export shows %q", format, v)
				}
			}
			norm := strings.ReplaceAll(out, `""`, `"`) // CSV doubles quotes
			for _, v := range append(lineageKept, "m***@example.org", "+44******0111") {
				if !strings.Contains(norm, v) {
					t.Fatalf("redacted %s export lacks %q:\n%s", format, v, out)
				}
			}
		})
	}
	t.Run("tail text", func(t *testing.T) {
		out, _, err := runMandate(t, nil, "audit", "tail", "--db", dbPath, "-n", "50", "--redact")
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range lineagePII {
			if strings.Contains(out, v) {
				t.Fatalf("redacted tail shows %q", v)
			}
		}
		if !strings.Contains(out, "status pending -> cancelled") || !strings.Contains(out, "refunded 0.00 USD -> 10.00 USD") {
			t.Fatalf("tail does not show what changed:\n%s", out)
		}
	})
}

func TestLineageCLI(t *testing.T) {
	dbPath, _, ids := lineageScript(t)
	tests := []struct {
		name     string
		args     []string
		want     []string
		not      []string
		exitCode int
	}{
		{name: "customer", args: []string{"--customer", "cus_ada"},
			want: []string{ids["phone"], ids["refund"], ids["cancel"], `phone "+441234567890" -> "+441234000111"`,
				"refunded 0.00 USD -> 10.00 USD", "refundable 120.00 USD -> 110.00 USD", "status pending -> cancelled",
				"attempt", "outcome", "by demo-agent", "policy.csv:", "policy "},
			not: []string{ids["email"]}},
		{name: "customer with an approval", args: []string{"--customer", "cus_marie"},
			want: []string{ids["email"], "by alice (approver)", "require_approval", `email "marie@example.fr" -> "marie.curie@example.org"`},
			not:  []string{ids["phone"]}},
		{name: "order", args: []string{"--order", "ord_1001"}, want: []string{ids["refund"]}, not: []string{ids["phone"], ids["cancel"]}},
		{name: "agent", args: []string{"--agent", "demo-agent", "--since", "1h"},
			want: []string{ids["phone"], ids["refund"], ids["cancel"], ids["email"], "by alice (approver)"}},
		{name: "redacted", args: []string{"--customer", "cus_marie", "--redact"},
			want: []string{`email "m***@example.fr" -> "m***@example.org"`}, not: []string{"marie@example.fr", "marie.curie@example.org"}},
		{name: "redacted jsonl", args: []string{"--customer", "cus_marie", "--redact", "--format", "jsonl"},
			want: []string{`"before":"m***@example.fr"`, `"after":"m***@example.org"`}, not: []string{"marie@example.fr", "marie.curie@example.org"}},
		{name: "nothing", args: []string{"--customer", "cus_nobody"}, want: []string{"nothing recorded for customer cus_nobody"}},
		// 0 is the whole trail, as in policy replay; "0 ago" used to be an
		// empty window that answered "nothing recorded" in an incident.
		{name: "since 0", args: []string{"--agent", "demo-agent", "--since", "0"},
			want: []string{ids["phone"], ids["refund"], ids["cancel"], ids["email"]}},
		{name: "nothing in a window", args: []string{"--customer", "cus_nobody", "--since", "1h"}, want: []string{"nothing recorded for customer cus_nobody since "}},
		{name: "two subjects", args: []string{"--customer", "cus_ada", "--order", "ord_1001"}, want: []string{"exactly one of"}, exitCode: 2},
		{name: "bad trace", args: []string{"--customer", "cus_ada", "--trace", "xyz"}, want: []string{"32 hex digits"}, exitCode: 2},
		{name: "bad format", args: []string{"--agent", "demo-agent", "--format", "csv"}, want: []string{"use text or jsonl"}, exitCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := runMandate(t, nil, append([]string{"lineage", "--db", dbPath}, tt.args...)...)
			code := 0
			if err != nil {
				code = 1
				if ee, ok := err.(interface{ ExitCode() int }); ok {
					code = ee.ExitCode()
				}
			}
			if code != tt.exitCode {
				t.Fatalf("exit %d, want %d: %s%s", code, tt.exitCode, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out+errOut, w) {
					t.Fatalf("output lacks %q:\n%s%s", w, out, errOut)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out+errOut, n) {
					t.Fatalf("output shows %q:\n%s", n, out)
				}
			}
		})
	}
	t.Run("jsonl in time order", func(t *testing.T) {
		out, _, err := runMandate(t, nil, "lineage", "--db", dbPath, "--customer", "cus_ada", "--format", "jsonl")
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		n := 0
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var r storage.Record
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			if r.Seq <= last {
				t.Fatalf("seq %d after %d", r.Seq, last)
			}
			last = r.Seq
			n++
		}
		if n != 6 { // attempt and outcome of the phone change, the refund and the cancellation
			t.Fatalf("%d records, want 6:\n%s", n, out)
		}
	})
}
