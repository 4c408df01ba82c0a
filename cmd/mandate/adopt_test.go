package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestServeAdoptsTheLivePolicy: one live policy across processes. A
// running `mandate serve` (embedded policy) shares its database with another
// process that records a newer policy (here an emergency deny, as an admin's
// reload would). From that moment no refund is allowed by the serve: until
// it adopts the live policy its actions are refused as decided under a
// policy that is not live, and once it has, the emergency rule denies them.
func TestServeAdoptsTheLivePolicy(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent", "--db", dbPath, "--store", filepath.Join(dir, "store.db"))
	refund := func(order, amount string) actionResult {
		t.Helper()
		var out actionResult
		res := call(t, c, "refund_order", map[string]any{"order_id": order, "amount": amount, "reason": "adopt test"})
		if res.StructuredContent == nil {
			t.Fatalf("refund %s %s: %s", order, amount, text(res))
		}
		decode(t, res, &out)
		return out
	}
	if out := refund("ord_1001", "10.00"); out.Decision != policy.Allow {
		t.Fatalf("before: %+v, want allow", out)
	}
	live := recordLive(t, dbPath, writePolicy(t, dir, emergencyDeny), "admin reload")

	adopted := false
	for deadline := time.Now().Add(15 * time.Second); !adopted; {
		out := refund("ord_1001", "10.00")
		switch {
		case out.Decision != policy.Deny:
			t.Fatalf("after another process recorded policy %s: %+v, want deny", live, out)
		case strings.Contains(out.Rule, "p, *, refund_order, true, deny"):
			adopted = true
		case !strings.Contains(out.Rule, "the live policy is "+live):
			t.Fatalf("denied for another reason than a stale policy: %s", out.Rule)
		case time.Now().After(deadline):
			t.Fatalf("serve did not adopt the live policy %s", live)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
