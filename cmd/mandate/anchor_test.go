package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mandatehq/mandate/storage"
)

func TestAuditMackey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "audit.key")
	out, _, status := runInProcess("audit", "mackey", "--out", key)
	if status != 0 || !strings.Contains(out, "wrote audit key ") {
		t.Fatalf("audit mackey: status %d, %q", status, out)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	k, err := storage.LoadAuditKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, k.ID()) {
		t.Fatalf("mackey printed %q, want the key id %s", out, k.ID())
	}
	b, _ := os.ReadFile(key)
	if strings.Contains(out, strings.TrimSpace(string(b))) {
		t.Fatal("mackey printed the secret")
	}
	// Never overwritten: the old key may be the one a trail was written with.
	if _, stderr, status := runInProcess("audit", "mackey", "--out", key); status != 1 || !strings.Contains(stderr, "exists") {
		t.Fatalf("second mackey: status %d, %q; want 1 and a refusal", status, stderr)
	}
	if b2, _ := os.ReadFile(key); string(b2) != string(b) {
		t.Fatal("the key file was replaced")
	}
	if _, _, status := runInProcess("audit", "mackey"); status != 2 {
		t.Fatalf("mackey without --out: status %d, want 2", status)
	}
}

// tamperDB opens the database file as someone with sqlite3 would, with the
// append-only triggers dropped.
func tamperDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", storage.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	for _, s := range []string{`DROP TRIGGER IF EXISTS audit_no_update`, `DROP TRIGGER IF EXISTS audit_no_delete`} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

// plainRechain recomputes every hash from record from on with plain
// SHA-256 and clears key_id, as a database writer who knows the (public)
// hashing but not the audit key would after editing a record: every record
// then links to the one before.
func plainRechain(t *testing.T, raw *sql.DB, from int64) {
	t.Helper()
	var prev string
	if err := raw.QueryRow(`SELECT COALESCE((SELECT hash FROM audit WHERE seq = ?), ?)`, from-1, strings.Repeat("0", 64)).Scan(&prev); err != nil {
		t.Fatal(err)
	}
	rows, err := raw.Query(`SELECT seq, time, agent, tool, args, attrs, decision, rule, policy_version, action_id, phase, outcome, error,
		CAST(duration_us AS TEXT), approver, comment, credential, changes, trace_id, conversation_id FROM audit WHERE seq >= ? ORDER BY seq`, from)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		seq int64
		f   []string
	}
	var all []row
	for rows.Next() {
		var r row
		f := make([]string, 19)
		ptrs := []any{&r.seq}
		for i := range f {
			ptrs = append(ptrs, &f[i])
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		// The hashing rule of storage.Record.hashed, as a writer without
		// the key would follow it for a plain record: approver and comment
		// only when set or when a later column is; later columns as name
		// and value, only when set (key_id is cleared below).
		later := []string{"credential", "changes", "trace_id", "conversation_id"}
		r.f = append([]string(nil), f[:13]...) // a copy: appending must not overwrite f
		anyLater := false
		for _, v := range f[15:] {
			anyLater = anyLater || v != ""
		}
		if f[13] != "" || f[14] != "" || anyLater {
			r.f = append(r.f, f[13], f[14])
		}
		for i, v := range f[15:] {
			if v != "" {
				r.f = append(r.f, later[i], v)
			}
		}
		all = append(all, r)
	}
	rows.Close()
	for _, r := range all {
		h := sha256.New()
		h.Write([]byte(prev))
		for _, s := range append([]string{strconv.FormatInt(r.seq, 10)}, r.f...) {
			var n [8]byte
			for i := range n {
				n[i] = byte(uint64(len(s)) >> (8 * i))
			}
			h.Write(n[:])
			h.Write([]byte(s))
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if _, err := raw.Exec(`UPDATE audit SET key_id = '', prev_hash = ?, hash = ? WHERE seq = ?`, prev, sum, r.seq); err != nil {
			t.Fatal(err)
		}
		prev = sum
	}
}

// TestAuditKeyEndToEnd: the built binary's serve with --audit-key writes
// keyed records, `audit verify --audit-key` calls them intact, and what a
// database writer without the key can do is caught.
func TestAuditKeyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "audit.key")
	if _, stderr, status := runBinary(t, "audit", "mackey", "--out", key); status != 0 {
		t.Fatalf("mackey: %s", stderr)
	}
	k, err := storage.LoadAuditKey(key)
	if err != nil {
		t.Fatal(err)
	}
	fresh := func(t *testing.T) string {
		t.Helper()
		d := t.TempDir()
		dbPath := filepath.Join(d, "mandate.db")
		c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AUDIT_KEY=" + key},
			"--agent", "demo-agent", "--db", dbPath, "--store", filepath.Join(d, "store.db"))
		for _, amount := range []string{"10.00", "20.00"} {
			if res := call(t, c, "refund_order", map[string]any{"order_id": "ord_1001", "amount": amount, "reason": "scratched"}); res.IsError {
				t.Fatalf("refund: %s", text(res))
			}
		}
		call(t, c, "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}) // pending
		// The second refund's outcome is a write-behind, committed in the
		// server's next idle moment: wait for all 5 records before anyone
		// tampers with the file, or the tampering races the commit.
		db, err := storage.Open(context.Background(), dbPath, storage.AuditKeyFile(key))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			n := 0
			if err := db.Records(context.Background(), storage.Filter{}, func(*storage.Record) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n == 5 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the trail has %d records 10s after the calls, want 5", n)
			}
		}
		return dbPath
	}
	verify := func(t *testing.T, dbPath string, args ...string) (string, int) {
		t.Helper()
		out, stderr, status := runInProcess(append([]string{"audit", "verify", "--db", dbPath}, args...)...)
		return out + stderr, status
	}

	t.Run("intact", func(t *testing.T) {
		dbPath := fresh(t)
		out, status := verify(t, dbPath, "--audit-key", key)
		if status != 0 || !strings.HasPrefix(out, "intact (keyed from seq 1): 5 records") || !strings.Contains(out, k.ID()) ||
			!strings.Contains(out, "actions agree with the trail: 3 actions") {
			t.Fatalf("verify --audit-key: status %d\n%s", status, out)
		}
		// The export says which key each record is keyed with, so a copy
		// stays checkable by whoever holds the key.
		if out, _, status := runInProcess("audit", "export", "--db", dbPath); status != 0 || strings.Count(out, `"key_id":"`+k.ID()+`"`) != 5 {
			t.Fatalf("export: status %d, want key_id on all 5 records:\n%s", status, out)
		}
		// Without the key the keyed records cannot be checked: not "intact".
		out, status = verify(t, dbPath)
		if status != 1 || !strings.HasPrefix(out, "cannot check: audit record 1 and later are keyed with audit key "+k.ID()) || strings.Contains(out, "intact (") {
			t.Fatalf("verify without the key: status %d\n%s", status, out)
		}
		// Another key: a clear refusal naming both.
		other := filepath.Join(t.TempDir(), "other.key")
		runInProcess("audit", "mackey", "--out", other)
		out, status = verify(t, dbPath, "--audit-key", other)
		if status != 1 || !strings.Contains(out, "keyed with audit key "+k.ID()) || !strings.Contains(out, "same key") {
			t.Fatalf("verify with another key: status %d\n%s", status, out)
		}
		// A server without the key, or with another, refuses to start.
		for _, args := range [][]string{nil, {"--audit-key", other}} {
			_, stderr, err := runMandate(t, nil, append([]string{"serve", "--agent", "demo-agent", "--db", dbPath, "--store", filepath.Join(t.TempDir(), "s.db")}, args...)...)
			if err == nil || !strings.Contains(stderr, "keyed with audit key "+k.ID()) {
				t.Fatalf("serve %v on a keyed trail: %v, %s", args, err, stderr)
			}
		}
	})

	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, raw *sql.DB)
		want   []string
	}{
		{"forged head with a correct unkeyed hash", func(t *testing.T, raw *sql.DB) {
			if _, err := raw.Exec(`INSERT INTO audit (seq, time, agent, tool, args, attrs, decision, rule, policy_version, action_id,
				phase, outcome, error, duration_us, prev_hash, hash, approver, comment, key_id)
				SELECT seq + 1, time, 'alice', tool, args, attrs, 'allow', rule, policy_version, action_id,
				'approval', 'approved', error, duration_us, prev_hash, hash, 'alice', '', key_id FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)`); err != nil {
				t.Fatal(err)
			}
			plainRechain(t, raw, 6)
		}, []string{"broken: record 6: downgraded"}},
		{"edited record, chain recomputed unkeyed", func(t *testing.T, raw *sql.DB) {
			if _, err := raw.Exec(`UPDATE audit SET args = replace(args, '10.00', '1000.00') WHERE seq = 1`); err != nil {
				t.Fatal(err)
			}
			plainRechain(t, raw, 1)
		}, []string{"unanchored: 5 records", "none is keyed with audit key"}},
		{"edited record, tail recomputed unkeyed", func(t *testing.T, raw *sql.DB) {
			if _, err := raw.Exec(`UPDATE audit SET args = replace(args, '20.00', '2000.00') WHERE seq = 3`); err != nil {
				t.Fatal(err)
			}
			plainRechain(t, raw, 3)
		}, []string{"broken: record 3: downgraded"}},
		{"executed action rewritten as denied", func(t *testing.T, raw *sql.DB) {
			if _, err := raw.Exec(`UPDATE actions SET status = 'denied', approver = 'bob' WHERE id = (SELECT id FROM actions WHERE status = 'executed' LIMIT 1)`); err != nil {
				t.Fatal(err)
			}
		}, []string{"intact (keyed from seq 1)", "actions DISAGREE with the trail: 2 disagreements", `status: table "denied", trail "executed"`, `approver: table "bob", trail ""`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dbPath := fresh(t)
			c.tamper(t, tamperDB(t, dbPath))
			out, status := verify(t, dbPath, "--audit-key", key)
			if status != 1 {
				t.Fatalf("verify --audit-key after tampering: status %d, want 1\n%s", status, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Fatalf("verify printed\n%s\nwant %q", out, w)
				}
			}
		})
	}

	t.Run("key file readable by others", func(t *testing.T) {
		loose := filepath.Join(t.TempDir(), "loose.key")
		b, _ := os.ReadFile(key)
		if err := os.WriteFile(loose, b, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chmod(loose, 0o644)
		d := t.TempDir()
		_, stderr, err := runMandate(t, nil, "serve", "--agent", "demo-agent", "--audit-key", loose,
			"--db", filepath.Join(d, "mandate.db"), "--store", filepath.Join(d, "store.db"))
		if err == nil || !strings.Contains(stderr, "mode 0644") || strings.Contains(stderr, strings.TrimSpace(string(b))) {
			t.Fatalf("serve with a 0644 key: %v, %s", err, stderr)
		}
		if _, err := os.Stat(filepath.Join(d, "mandate.db")); err == nil {
			t.Fatal("serve created the database before refusing the key")
		}
	})
}

// TestAuditVerifyUnanchored: without a key, verify says the trail is
// unanchored, exits 0 as before, and points to the key and to checkpoints.
func TestAuditVerifyUnanchored(t *testing.T) {
	e := newAuditEnv(t)
	auditScript(t, e)
	out, _, err := runAuditCmd(context.Background(), "verify", "--db", e.dbPath)
	if err != nil || !strings.HasPrefix(out, "unanchored: ") || strings.Contains(out, "intact") ||
		!strings.Contains(out, "--audit-key FILE") || !strings.Contains(out, "--since-checkpoint FILE") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
}
