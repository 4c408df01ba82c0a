package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestServeRefusesRatesThatAreNotLive runs two `mandate serve` processes
// for one agent on one SQLite file, each with its own rates file, as two
// MCP clients on two hosts with diverging copies would. 60.00 EUR on
// ord_1012 is 65.05 USD at the shipped rate (over demo-agent's 50.00
// limit: require_approval) and 30.00 USD at 0.5 (allow): the same refund
// must not be decided both ways. The process started last records its
// rates as live (as with the policy); the other refuses every refund,
// audited, with the key left free, until its own file changes the same
// way and its watcher reloads it; then the same request and key act. A
// later reload in one process makes the other refuse again until it
// reloads too.
func TestServeRefusesRatesThatAreNotLive(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	fileA, fileB := filepath.Join(dir, "a", "rates.csv"), filepath.Join(dir, "b", "rates.csv")
	write := func(path, text string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := rates.WriteFile(path, []byte(text)); err != nil {
			t.Fatal(err)
		}
		r, err := rates.Parse(path, []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return r.Version
	}
	shipped := write(fileA, string(mandate.DefaultRates))
	half := write(fileB, "base, USD\nEUR, 0.5\n")
	a := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent", "--db", dbPath, "--store", storePath, "--rates", fileA)
	b := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent", "--db", dbPath, "--store", storePath, "--rates", fileB)

	order := "ord_1012"
	refund := func(c *client.Client, key string) actionResult {
		t.Helper()
		var r actionResult
		decode(t, call(t, c, "refund_order", map[string]any{"order_id": order, "amount": "60.00", "reason": "damaged", "idempotency_key": key}), &r)
		return r
	}
	// liveIs waits until a process has recorded version as the live rates.
	liveIs := func(version string) {
		t.Helper()
		db, err := storage.Open(context.Background(), dbPath)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			live, err := db.LiveRates(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if live != nil && live.Version == version {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the live rates are %+v, want %s recorded by a reload", live, version)
			}
		}
	}
	stale := func(r actionResult) bool { return strings.HasPrefix(r.Rule, "default deny: "+tools.StaleRatesReason) }
	// until retries the refund with key on c until done says it is the
	// expected answer: a watcher reloads within about a second.
	until := func(c *client.Client, key, what string, done func(actionResult) bool) actionResult {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := refund(c, key)
			if done(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %+v", what, r)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	r := refund(a, "a-1")
	if r.Decision != "deny" || r.Status != "denied" || !stale(r) ||
		!strings.Contains(r.Rule, "version "+shipped) || !strings.Contains(r.Rule, "the live rates are "+half) {
		t.Fatalf("refund by the process whose rates are not live: %+v, want refused naming both versions", r)
	}
	if !strings.Contains(r.Message, "exchange rates are not the live ones") || !strings.Contains(r.Message, "nothing was changed") {
		t.Fatalf("message %q does not say nothing was done and a retry may work", r.Message)
	}
	trail, last := actionTrail(t, dbPath, r.ActionID)
	if got := strings.Join(trail, " "); got != "attempt/refused/demo-agent" || last.Rule != r.Rule {
		t.Fatalf("audit of the refusal: %v %+v", trail, last)
	}
	if o := getOrder(t, a, "ord_1012"); o.Refunded != "0.00" {
		t.Fatalf("ord_1012 refunded %s after a refusal, want 0.00", o.Refunded)
	}
	if r := refund(b, "b-1"); r.Decision != "allow" || r.Status != "executed" {
		t.Fatalf("refund by the process holding the live rates: %+v, want executed", r)
	}

	// A's file changes the way B's did: its watcher reloads and records it,
	// and the refused request, with the same key, now acts.
	write(fileA, "base, USD\nEUR, 0.5\n")
	r = until(a, "a-1", "after A reloaded the live rates", func(r actionResult) bool { return !stale(r) })
	if r.Decision != "allow" || r.Status != "executed" {
		t.Fatalf("the refused request, sent again with its key after the reload: %+v, want executed", r)
	}
	if o := getOrder(t, a, "ord_1012"); o.Refunded != "120.00" {
		t.Fatalf("ord_1012 refunded %s, want 120.00: B's refund and A's retried one", o.Refunded)
	}

	// B reloads new rates: now A refuses until it reloads them too.
	order = "ord_1041" // 420.00 EUR, none refunded
	twice := write(fileB, "base, USD\nEUR, 2.0\n")
	liveIs(twice)
	r = refund(a, "a-2")
	if !stale(r) || !strings.Contains(r.Rule, "the live rates are "+twice) {
		t.Fatalf("refund by A after B reloaded other rates: %+v, want refused naming B's new rates %s as live", r, twice)
	}
	write(fileA, "base, USD\nEUR, 2.0\n")
	// 60.00 EUR at 2.0 is 120.00 USD: over demo-agent's limit, so a person
	// must approve it, decided with the live rates.
	r = until(a, "a-2", "after A reloaded B's new rates", func(r actionResult) bool { return !stale(r) })
	if r.Decision != "require_approval" || r.Status != "pending" {
		t.Fatalf("after both reloaded: %+v, want require_approval at the live rate", r)
	}
	if o := getOrder(t, b, "ord_1041"); o.Refunded != "0.00" {
		t.Fatalf("ord_1041 refunded %s, want 0.00: pending", o.Refunded)
	}
}
