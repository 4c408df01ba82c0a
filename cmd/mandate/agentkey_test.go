package main

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/storage"
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
