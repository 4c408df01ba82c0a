package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestServeRefusesUnderAPolicyThatIsNotLive: one live policy across
// processes. A running `mandate serve` shares its database with another
// process that records a newer policy (an emergency deny, as an admin's
// reload of its own file would). From that moment the serve refuses every
// action, and never takes the other process's rules for its own; once its
// own policy file holds the same rules, it reloads them and decides again.
func TestServeRefusesUnderAPolicyThatIsNotLive(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	mine := writePolicy(t, dir, "")
	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent", "--db", dbPath, "--store", filepath.Join(dir, "store.db"), "--policy", mine)
	refund := func() actionResult {
		t.Helper()
		var out actionResult
		res := call(t, c, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "stale test"})
		if res.StructuredContent == nil {
			t.Fatalf("refund: %s", text(res))
		}
		decode(t, res, &out)
		return out
	}
	if out := refund(); out.Decision != policy.Allow {
		t.Fatalf("before: %+v, want allow", out)
	}
	live := recordLive(t, dbPath, writePolicy(t, t.TempDir(), emergencyDeny), "admin reload")

	// Long enough for any (wrong) adoption to have happened.
	for range 3 {
		out := refund()
		if out.Decision != policy.Deny || !strings.Contains(out.Rule, "the live policy is "+live) || !strings.Contains(out.Message, "not the live ones") {
			t.Fatalf("after another process recorded policy %s: %+v, want a refusal naming the live version", live, out)
		}
		time.Sleep(700 * time.Millisecond)
	}

	// The operator gives this server the same rules: it reloads, records
	// the same version, and decides under it.
	if err := os.WriteFile(mine, append(append([]byte(nil), mandate.DefaultPolicy...), emergencyDeny...), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out := refund()
		if strings.Contains(out.Rule, "p, *, refund_order, true, deny") {
			break
		}
		if out.Decision != policy.Deny || time.Now().After(deadline) {
			t.Fatalf("after its own file changed: %+v, want the emergency rule to deny", out)
		}
	}
}
