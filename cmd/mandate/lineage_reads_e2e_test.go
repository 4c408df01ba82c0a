package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/storage"
)

// TestLineageFindsEveryRead: over stdio with the built binary, the shipped
// policy and the embedded store, every lookup through which demo-agent saw
// cus_ada is in `mandate lineage --customer cus_ada`, also those whose
// arguments do not name her: find_customer by email, get_order of an
// order no action touched, get_action_status of an action on her, the
// answer to a retry of her refund by its idempotency key. Lookups
// that found nothing are recorded as not_found, not read, name nobody they
// did not show, and the trail with them verifies and cross-checks.
func TestLineageFindsEveryRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	demo := startServer(t, "2025-06-18", []string{"MANDATE_AGENT=demo-agent"}, "--db", dbPath, "--store", storePath)

	refundArgs := map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "late delivery", "idempotency_key": "refund-ada-1"}
	var refund, retry actionResult
	decode(t, call(t, demo, "refund_order", refundArgs), &refund)
	if refund.Status != storage.StatusExecuted {
		t.Fatalf("refund: %+v", refund)
	}
	// A retry is answered from the record: a read of the action, on her.
	decode(t, call(t, demo, "refund_order", refundArgs), &retry)
	if retry.ActionID != refund.ActionID {
		t.Fatalf("the retry answered %+v, want the first refund's", retry)
	}
	for _, c := range []struct {
		tool    string
		args    map[string]any
		missing bool
	}{
		{"find_customer", map[string]any{"email": "ada@example.com"}, false},
		{"get_order", map[string]any{"order_id": "ord_1002"}, false},
		{"get_action_status", map[string]any{"action_id": refund.ActionID}, false},
		{"find_customer", map[string]any{"email": "nobody@example.com"}, true},
		{"get_customer", map[string]any{"customer_id": "cus_nobody"}, true},
		{"get_order", map[string]any{"order_id": "ord_nope"}, true},
		{"get_action_status", map[string]any{"action_id": "act_nope"}, true},
	} {
		if res := call(t, demo, c.tool, c.args); res.IsError != c.missing {
			t.Fatalf("%s %v: error %v, want %v: %s", c.tool, c.args, res.IsError, c.missing, text(res))
		}
	}

	// The server's lookups commit behind its answers: let it finish.
	if err := demo.Close(); err != nil {
		t.Fatalf("serve did not exit cleanly: %v", err)
	}
	out, errOut, err := runMandate(t, nil, "lineage", "--customer", "cus_ada", "--format", "jsonl", "--db", dbPath)
	if err != nil {
		t.Fatalf("lineage: %v\n%s", err, errOut)
	}
	var lookups []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r storage.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if r.Outcome == storage.OutcomeRead || r.Outcome == storage.OutcomeNotFound {
			lookups = append(lookups, r.Tool+" "+r.Outcome+" "+r.ShownCustomer)
		}
	}
	want := []string{"get_action_status read cus_ada", "find_customer read cus_ada", "get_order read cus_ada", "get_action_status read cus_ada"}
	if !slices.Equal(lookups, want) {
		t.Fatalf("cus_ada's lineage shows lookups %q, want %q\n%s", lookups, want, out)
	}

	out, errOut, err = runMandate(t, nil, "audit", "export", "--db", dbPath)
	if err != nil {
		t.Fatalf("export: %v\n%s", err, errOut)
	}
	var notFound []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r storage.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if r.Outcome == storage.OutcomeNotFound {
			if r.ShownCustomer != "" || r.Decision != "allow" || r.Error != "not_found" {
				t.Fatalf("a lookup that found nothing is recorded as %s", line)
			}
			notFound = append(notFound, r.Tool)
		}
	}
	if want := []string{"find_customer", "get_customer", "get_order", "get_action_status"}; !slices.Equal(notFound, want) {
		t.Fatalf("not_found records for %v, want %v\n%s", notFound, want, out)
	}
	for _, c := range []struct{ format, want string }{
		{"csv", ",cus_ada\n"}, // shown_customer, the last column
		{"ocsf", `"shown_customer":"cus_ada"`},
		{"ocsf", `"status_detail":"not_found: allowed, but nothing was found, so nothing was shown"`},
		{"text", "not_found"},
	} {
		out, errOut, err := runMandate(t, nil, "audit", "export", "--format", c.format, "--db", dbPath)
		if err != nil {
			t.Fatalf("export --format %s: %v\n%s", c.format, err, errOut)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("export --format %s holds no %q:\n%s", c.format, c.want, out)
		}
	}
	if out, errOut, err := runMandate(t, nil, "audit", "verify", "--db", dbPath); err != nil {
		t.Fatalf("verify: %v\n%s\n%s", err, out, errOut)
	}
}
