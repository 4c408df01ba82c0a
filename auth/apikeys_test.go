package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

var toolNames = []string{"get_order", "get_customer", "find_customer", "get_action_status", "refund_order", "cancel_order", "update_account"}

func newAgents(t *testing.T) (*Agents, *clock, *storage.DB) {
	t.Helper()
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	db.Now = clk.Now
	return &Agents{DB: db, Policy: policy.NewEngine(loadPolicy(t, "")), Now: clk.Now}, clk, db
}

func bearer(key, addr string) *http.Request {
	r := httptest.NewRequest("POST", "/mcp", nil)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	r.RemoteAddr = addr
	return r
}

func mcpAuthRecords(t *testing.T, db *storage.DB) []*storage.Record {
	t.Helper()
	var out []*storage.Record
	err := db.Records(context.Background(), storage.Filter{}, func(r *storage.Record) error {
		if r.Tool == AgentAuthTool {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAgentsAuthenticate: a key proves its agent until it expires, is
// revoked, or the live policy stops treating its name as an agent; each
// refusal says why and is audited without the secret.
func TestAgentsAuthenticate(t *testing.T) {
	a, clk, db := newAgents(t)
	ctx := context.Background()
	key, k, err := db.CreateAPIKey(ctx, "demo-agent", clk.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(bearer(key, "10.0.0.1:5000"), toolNames)
	if err != nil || p.Agent != "demo-agent" || p.KeyID != k.ID {
		t.Fatalf("good key: %+v %v", p, err)
	}
	keys, _ := db.APIKeys(ctx)
	if len(keys) != 1 || !keys[0].LastUsed.Equal(clk.Now()) {
		t.Fatalf("last used not recorded: %+v", keys)
	}
	reason := func(key string) string {
		t.Helper()
		_, err := a.Authenticate(bearer(key, "10.0.0.1:5000"), toolNames)
		var ae *AgentError
		if !errors.As(err, &ae) {
			t.Fatalf("want a refusal, got %v", err)
		}
		return ae.Reason
	}
	if r := reason(""); r != ReasonNoCredentials {
		t.Fatalf("no key: %s", r)
	}
	wrong := key[:len(key)-1] + "0"
	if key[len(key)-1] == '0' {
		wrong = key[:len(key)-1] + "1"
	}
	if r := reason(wrong); r != ReasonBadKey {
		t.Fatalf("wrong secret: %s", r)
	}
	// The policy no longer makes demo-agent an agent: refused at once.
	a.Policy.Swap(policyWithout(t, "g, demo-agent, support_agent"))
	if r := reason(key); r != ReasonNotAgent {
		t.Fatalf("demo-agent no longer an agent: %s", r)
	}
	a.Policy.Swap(loadPolicy(t, ""))
	clk.Add(time.Hour)
	if r := reason(key); r != ReasonExpired {
		t.Fatalf("expired: %s", r)
	}
	clk.Add(-time.Hour)
	if _, err := db.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if r := reason(key); r != ReasonRevoked {
		t.Fatalf("revoked: %s", r)
	}
	recs := mcpAuthRecords(t, db)
	if len(recs) != 5 {
		t.Fatalf("%d mcp_auth records, want 5", len(recs))
	}
	secret := key[strings.LastIndex(key, "_")+1:]
	for _, r := range recs {
		if r.Decision != policy.Deny || r.Outcome != "refused" || strings.Contains(string(r.Args), secret) || strings.Contains(r.Error, secret) {
			t.Fatalf("record %+v", r)
		}
	}
}

// policyWithout is the shipped policy without one line.
func policyWithout(t *testing.T, line string) *policy.Policy {
	t.Helper()
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: []byte(strings.Replace(string(mandate.DefaultPolicy), line, "", 1))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentsAuditRateLimit: a flood of bad keys from one address records
// at most AuditPerMinute refusals a minute, and other addresses keep
// theirs up to the global cap; a genuine key refused is recorded all the
// same; the next minute records again, first the count left out.
func TestAgentsAuditRateLimit(t *testing.T) {
	a, clk, db := newAgents(t)
	a.AuditPerMinute, a.GlobalAuditPerMinute = 3, 5
	for range 10 {
		_, _ = a.Authenticate(bearer("mk_nope", "10.0.0.1:1"), toolNames)
	}
	if n := len(mcpAuthRecords(t, db)); n != 3 {
		t.Fatalf("one address: %d records, want 3", n)
	}
	for range 10 {
		_, _ = a.Authenticate(bearer("mk_nope", "10.0.0.2:1"), toolNames)
	}
	if n := len(mcpAuthRecords(t, db)); n != 5 {
		t.Fatalf("global cap: %d records, want 5", n)
	}
	// A stolen key, revoked, used from yet another address while the junk
	// has used up every anonymous budget: still recorded, with its key.
	ctx := context.Background()
	key, k, err := db.CreateAPIKey(ctx, "demo-agent", clk.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeAPIKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	for range 10 { // and its own budget holds too
		_, _ = a.Authenticate(bearer(key, "10.0.0.3:1"), toolNames)
	}
	recs := mcpAuthRecords(t, db)
	if len(recs) != 8 || recs[7].Error != ReasonRevoked || recs[7].Credential != "key:"+k.ID {
		t.Fatalf("revoked key after the flood: %d records, last %+v", len(recs), recs[len(recs)-1])
	}
	clk.Add(time.Minute)
	_, _ = a.Authenticate(bearer("mk_nope", "10.0.0.1:1"), toolNames)
	recs = mcpAuthRecords(t, db)
	if len(recs) != 10 {
		t.Fatalf("next minute: %d records, want 10 (the count left out, and the refusal)", len(recs))
	}
	// 7 + 8 junk and 7 uses of the revoked key were left out.
	if !strings.Contains(string(recs[8].Args), `"not_recorded":"22"`) || !strings.HasPrefix(recs[8].Error, "22 refused requests") {
		t.Fatalf("count of unrecorded refusals: %+v", recs[8])
	}
}
