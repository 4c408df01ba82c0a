package main

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

// createKey makes a key for agent in a new database with the CLI, and
// returns the database's path, the key and its id.
func createKey(t *testing.T, agent string, args ...string) (dbPath, key, id string) {
	t.Helper()
	dbPath = filepath.Join(t.TempDir(), "mandate.db")
	key, stderr, status := runInProcess(append([]string{"agent", "key", "create", agent, "--db", dbPath}, args...)...)
	key = strings.TrimSpace(key)
	id, _, ok := storage.SplitAPIKey(key)
	if status != 0 || !ok {
		t.Fatalf("agent key create: %d %q %s", status, key, stderr)
	}
	return dbPath, key, id
}

// TestAgentKeyListTimesSetByHand: a key revoked or expired by hand in SQL
// with text that is no time is listed as revoked or expired, with the
// text, not as active.
func TestAgentKeyListTimesSetByHand(t *testing.T) {
	for _, tt := range []struct{ set, want string }{
		{"revoked_at = 'yes'", `revoked (unreadable revoked_at="yes")`},
		{"expires_at = 'soon'", `expired`},
		{"revoked_at = '2026-03-01 12:00:00'", `revoked 2026-03-01T12:00:00Z`},
	} {
		dbPath, _, id := createKey(t, "demo-agent")
		execSQL(t, dbPath, `UPDATE api_keys SET `+tt.set+` WHERE id = '`+id+`'`)
		out, stderr, status := runInProcess("agent", "key", "list", "--db", dbPath)
		if status != 0 || !strings.Contains(out, id+"  demo-agent  "+tt.want) || strings.Contains(out, "active") {
			t.Errorf("%s: list %d\n%s%s\nwant %q", tt.set, status, out, stderr, tt.want)
		}
	}
}

// execSQL runs q on the SQLite database at path, as an operator with
// sqlite3 would.
func execSQL(t *testing.T, path, q string) {
	t.Helper()
	raw, err := sql.Open("sqlite", storage.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(q); err != nil {
		t.Fatal(err)
	}
}

// TestAgentKeyRevokeWholeKey: revoke given the whole key, as pasted after a
// secret scanner's alert, revokes its id and says so; no message, on
// success or failure, shows anything past the id.
func TestAgentKeyRevokeWholeKey(t *testing.T) {
	dbPath, key, id := createKey(t, "demo-agent")
	_, secret, _ := storage.SplitAPIKey(key)
	out, stderr, status := runInProcess("agent", "key", "revoke", key, "--db", dbPath)
	if status != 0 || !strings.Contains(out, "revoked API key "+id) || !strings.Contains(stderr, "whole key") {
		t.Fatalf("revoke the whole key: %d %q %q", status, out, stderr)
	}
	if strings.Contains(out+stderr, secret[:8]) {
		t.Fatalf("revoke printed the secret: %q %q", out, stderr)
	}
	list, _, _ := runInProcess("agent", "key", "list", "--db", dbPath)
	if !strings.Contains(list, id+"  demo-agent  revoked") {
		t.Fatalf("after revoking the whole key:\n%s", list)
	}
	// Unknown keys, whole or cut short, and junk: not_found, and the
	// message stops at the id.
	unknown := "mk_000000000000_" + secret
	for _, arg := range []string{unknown, unknown[:40], "mk_" + secret, secret} {
		out, stderr, status := runInProcess("agent", "key", "revoke", arg, "--db", dbPath)
		if status != 1 || strings.Contains(out+stderr, secret[:8]) {
			t.Errorf("revoke %.20s…: %d %q %q; want exit 1 without the secret", arg, status, out, stderr)
		}
	}
}

// TestAgentKeyAudit: agent key create and revoke each leave an audit record
// (key id, agent, expiry; never the secret) that audit verify, every export
// format and lineage take as they take any other. On a keyed trail they
// need the audit key, and without it change nothing.
func TestAgentKeyAudit(t *testing.T) {
	dbPath, key, id := createKey(t, "demo-agent", "--expires", "90d")
	_, secret, _ := storage.SplitAPIKey(key)
	if _, stderr, status := runInProcess("agent", "key", "revoke", id, "--db", dbPath); status != 0 {
		t.Fatalf("revoke: %s", stderr)
	}
	if out, stderr, status := runInProcess("audit", "verify", "--db", dbPath); status != 0 || !strings.HasPrefix(out, "unanchored") && !strings.HasPrefix(out, "intact") {
		t.Fatalf("audit verify: %d\n%s%s", status, out, stderr)
	}
	for _, format := range []string{"jsonl", "csv", "ocsf", "text"} {
		out, stderr, status := runInProcess("audit", "export", "--format", format, "--db", dbPath)
		if status != 0 || strings.Count(out, id) != 2 || !strings.Contains(out, storage.KeyCreateTool) || !strings.Contains(out, storage.KeyRevokeTool) ||
			strings.Contains(out, secret[:16]) {
			t.Fatalf("audit export --format %s: %d, want the key's id in 2 records (create, revoke) and no secret:\n%s%s", format, status, out, stderr)
		}
	}
	out, stderr, status := runInProcess("audit", "export", "--tool", storage.KeyCreateTool, "--db", dbPath)
	if status != 0 || !strings.Contains(out, `"args":{"agent":"demo-agent","expires_at":"`) || !strings.Contains(out, `"key_id":"`+id+`"`) {
		t.Fatalf("the creation's record: %d\n%s%s", status, out, stderr)
	}
	if out, stderr, status := runInProcess("lineage", "--agent", storage.KeyAdminAgent, "--db", dbPath); status != 0 ||
		!strings.Contains(out, storage.KeyCreateTool) || !strings.Contains(out, storage.KeyRevokeTool) {
		t.Fatalf("lineage --agent %s: %d\n%s%s", storage.KeyAdminAgent, status, out, stderr)
	}

	// A keyed trail: without its audit key, neither command changes anything.
	auditKey := filepath.Join(t.TempDir(), "audit.key")
	if _, stderr, status := runInProcess("audit", "mackey", "--out", auditKey); status != 0 {
		t.Fatal(stderr)
	}
	dbPath, _, id = createKey(t, "demo-agent", "--audit-key", auditKey)
	if _, stderr, status := runInProcess("agent", "key", "revoke", id, "--db", dbPath); status != 1 || !strings.Contains(stderr, "audit key") {
		t.Fatalf("revoke on a keyed trail without the key: %d %q, want a refusal naming the audit key", status, stderr)
	}
	if _, stderr, status := runInProcess("agent", "key", "create", "demo-agent", "--db", dbPath); status != 1 || !strings.Contains(stderr, "audit key") {
		t.Fatalf("create on a keyed trail without the key: %d %q", status, stderr)
	}
	if list, _, _ := runInProcess("agent", "key", "list", "--db", dbPath); strings.Count(list, "active") != 1 {
		t.Fatalf("after the refusals, want the one key, active:\n%s", list)
	}
	if _, stderr, status := runInProcess("agent", "key", "revoke", id, "--audit-key", auditKey, "--db", dbPath); status != 0 {
		t.Fatalf("revoke with the key: %s", stderr)
	}
	if out, stderr, status := runInProcess("audit", "verify", "--audit-key", auditKey, "--db", dbPath); status != 0 || !strings.HasPrefix(out, "intact (keyed from seq 1): 2 records") {
		t.Fatalf("audit verify of the keyed trail: %d\n%s%s", status, out, stderr)
	}
}

// TestAgentKeyCreateUsesLivePolicy: agent key create judges NAME under the
// live policy a server recorded in the database, the one every request
// with the key is checked against, not under ./policy.csv; the refusal
// names the version it checked. With no live policy recorded yet, the
// files decide, and a note says so.
func TestAgentKeyCreateUsesLivePolicy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	live := recordLive(t, dbPath, writePolicy(t, t.TempDir(), ""), "serve start") // serve on the shipped policy
	t.Chdir(dir)
	lookupBot := "\np, order_reader, get_order, true, allow\ng, lookup-bot, order_reader\n"
	writePolicy(t, dir, lookupBot) // ./policy.csv, edited after mandate init

	_, stderr, status := runInProcess("agent", "key", "create", "lookup-bot", "--db", dbPath)
	if status != 2 || !strings.Contains(stderr, `"lookup-bot" is not an agent (an identity granted some tool) in the live policy, version `+live) ||
		!strings.Contains(stderr, "policy.csv (version ") || !strings.Contains(stderr, "not live until a server loads it") {
		t.Fatalf("create lookup-bot, only in ./policy.csv: %d %q; want a refusal naming live version %s and the file", status, stderr, live)
	}

	// ./policy.csv without demo-agent: the live policy has it, so the key
	// is made, and works against the live policy.
	noDemo := strings.Replace(string(mandate.DefaultPolicy), "g, demo-agent, support_agent\n", "", 1)
	if noDemo == string(mandate.DefaultPolicy) {
		t.Fatal("the shipped policy no longer has demo-agent's line")
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.csv"), []byte(noDemo), 0o644); err != nil {
		t.Fatal(err)
	}
	key, stderr, status := runInProcess("agent", "key", "create", "demo-agent", "--db", dbPath)
	if status != 0 || strings.Contains(stderr, "note:") {
		t.Fatalf("create demo-agent, in the live policy only: %d %q", status, stderr)
	}
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pol, err := recordedPolicy(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range tools.ServerTools(&tools.Deps{}) {
		names = append(names, st.Tool.Name)
	}
	agents := &auth.Agents{DB: db, Policy: policy.NewEngine(pol), Logger: slog.New(slog.DiscardHandler)}
	r := httptest.NewRequest("POST", "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(key))
	if p, err := agents.Authenticate(r, names); err != nil || p.Agent != "demo-agent" {
		t.Fatalf("the new key against the live policy: %+v, %v", p, err)
	}

	// A new database: no live policy yet, so ./policy.csv decides, and the
	// note says so.
	writePolicy(t, dir, lookupBot)
	_, stderr, status = runInProcess("agent", "key", "create", "lookup-bot", "--db", filepath.Join(dir, "new.db"))
	if status != 0 || !strings.Contains(stderr, "no server has recorded a live policy") || !strings.Contains(stderr, "policy.csv (version ") {
		t.Fatalf("create lookup-bot on a new database: %d %q; want it made, with a note naming ./policy.csv", status, stderr)
	}
}
