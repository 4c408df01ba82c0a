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
