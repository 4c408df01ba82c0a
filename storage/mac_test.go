package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testAuditKey is a fresh random audit key.
func testAuditKey(t testing.TB) *AuditKey {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	k, err := NewAuditKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyedTrail appends n records to the database at path, opened with opts.
func keyedTrail(t *testing.T, path string, n int, opts ...Option) {
	t.Helper()
	db, err := Open(context.Background(), engineDB(t, path), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range n {
		r := &Record{Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{"order_id":"ord_1002"}`),
			Decision: "allow", ActionID: "act_" + string(rune('a'+i)), Phase: PhaseAttempt}
		if err := db.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyWith(t *testing.T, path string, k *AuditKey) (VerifyResult, error) {
	t.Helper()
	db, err := Open(context.Background(), engineDB(t, path), WithAuditKey(k))
	if err != nil {
		return VerifyResult{}, err // a key other than the head's is refused at once
	}
	defer db.Close()
	return db.Verify(context.Background())
}

// rechain rewrites the stored chain from record from on, as a database
// writer without the key would: edit changes record from, keyID says what
// key_id each rewritten record gets, and every hash from there on is
// recomputed with plain SHA-256 so that each record links to the one before.
func rechain(t *testing.T, path string, from int64, edit func(*Record), keyID func(*Record) string) {
	t.Helper()
	raw, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, s := range []string{`DROP TRIGGER IF EXISTS audit_no_update`, `DROP TRIGGER IF EXISTS audit_no_delete`} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := raw.Query(`SELECT ` + chainColumns + ` FROM audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for rows.Next() {
		var r Record
		if err := scanChain(rows, &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	rows.Close()
	prev := genesis
	for i := range recs {
		r := &recs[i]
		if r.Seq < from {
			prev = r.Hash
			continue
		}
		if r.Seq == from && edit != nil {
			edit(r)
		}
		r.KeyID = keyID(r)
		r.PrevHash, r.Hash = prev, hashRecord(prev, r.Seq, r.hashed())
		prev = r.Hash
		if _, err := raw.Exec(`UPDATE audit SET agent = ?, decision = ?, key_id = ?, prev_hash = ?, hash = ? WHERE seq = ?`,
			r.Agent, r.Decision, r.KeyID, r.PrevHash, r.Hash, r.Seq); err != nil {
			t.Fatal(err)
		}
	}
}

// forgeHead inserts a record at the head whose hash is plain SHA-256,
// correct for its fields, with key_id set to keyID.
func forgeHead(t *testing.T, path, keyID string) {
	t.Helper()
	raw, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var seq int64
	var prev string
	if err := raw.QueryRow(`SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev); err != nil {
		t.Fatal(err)
	}
	r := &Record{Time: approvalT0, Agent: "alice", Tool: "refund_order", Args: json.RawMessage(`{"order_id":"ord_1002"}`),
		Decision: "allow", ActionID: "act_a", Phase: PhaseApproval, Outcome: StatusApproved, Approver: "alice", KeyID: keyID}
	r.Seq, r.PrevHash = seq+1, prev
	r.Hash = hashRecord(prev, r.Seq, r.hashed())
	f := r.fields()
	if _, err := raw.Exec(`INSERT INTO audit (seq, time, agent, tool, args, attrs, decision, rule, policy_version,
			action_id, phase, outcome, error, duration_us, prev_hash, hash, approver, comment, key_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Seq, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], 0, r.PrevHash, r.Hash, r.Approver, r.Comment, r.KeyID); err != nil {
		t.Fatal(err)
	}
}

func TestKeyedChain(t *testing.T) {
	k := testAuditKey(t)
	path := filepath.Join(t.TempDir(), "mandate.db")
	keyedTrail(t, path, 3)                  // before the key: plain
	keyedTrail(t, path, 4, WithAuditKey(k)) // then keyed
	res, err := verifyWith(t, path, k)
	if err != nil {
		t.Fatalf("verify with the key: %v", err)
	}
	if res.Count != 7 || res.KeyedFrom != 4 || res.KeyID != k.ID() || !res.Anchored() {
		t.Fatalf("got %+v, want 7 records keyed from 4 with %s", res, k.ID())
	}
	// Keyed records name the key, and their hash is not the plain one.
	db := openPath(t, path)
	recs := storedChain(t, db)
	for _, r := range recs {
		plain := hashRecord(r.PrevHash, r.Seq, r.hashed())
		if keyed := r.Seq >= 4; keyed != (r.KeyID == k.ID()) || keyed == (plain == r.Hash) {
			t.Fatalf("record %d: key_id %q, plain hash %v", r.Seq, r.KeyID, plain == r.Hash)
		}
	}
	// Without the key the keyed part cannot be checked: a KeyError naming
	// where it starts, not a silent pass.
	_, err = verifyWith(t, path, nil)
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Seq != 4 || ke.KeyID != k.ID() || ke.Have != "" {
		t.Fatalf("verify without the key: %v, want a KeyError at 4", err)
	}
	// With another key: refused when opening, naming both keys, not "edited".
	other := testAuditKey(t)
	_, err = verifyWith(t, path, other)
	if !errors.Is(err, ErrKeyedHead) || !strings.Contains(err.Error(), k.ID()) || !strings.Contains(err.Error(), other.ID()) {
		t.Fatalf("verify with another key: %v, want ErrKeyedHead naming both keys", err)
	}
}

// storedChain reads every record as Verify does.
func storedChain(t *testing.T, db *DB) []Record {
	t.Helper()
	rows, err := db.db.Query(`SELECT ` + chainColumns + ` FROM audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		if err := scanChain(rows, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestKeyedChainCatchesForgery: what a database writer without the key can
// do to a keyed trail, each caught by Verify with the key.
func TestKeyedChainCatchesForgery(t *testing.T) {
	k := testAuditKey(t)
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, path string)
		seq    int64
		reason string
	}{
		{"forged head with a correct unkeyed hash", func(t *testing.T, path string) { forgeHead(t, path, "") }, 7, "downgraded"},
		{"forged head claiming the key", func(t *testing.T, path string) { forgeHead(t, path, k.ID()) }, 7, "edited"},
		{"edited record, chain recomputed unkeyed", func(t *testing.T, path string) {
			rechain(t, path, 4, func(r *Record) { r.Decision = "deny" }, func(*Record) string { return "" })
		}, 4, "downgraded"},
		{"edited record, chain recomputed keeping key_id", func(t *testing.T, path string) {
			rechain(t, path, 4, func(r *Record) { r.Agent = "bob" }, func(r *Record) string { return r.KeyID })
		}, 4, "edited"},
		{"key_id cleared on the first record", func(t *testing.T, path string) {
			vtTamper(t, &DB{Path: path}, `UPDATE audit SET key_id = '' WHERE seq = 1`)
		}, 1, "edited"},
		{"key_id cleared on the head", func(t *testing.T, path string) {
			vtTamper(t, &DB{Path: path}, `UPDATE audit SET key_id = '' WHERE seq = 6`)
		}, 6, "downgraded"},
		{"key_id changed", func(t *testing.T, path string) {
			vtTamper(t, &DB{Path: path}, `UPDATE audit SET key_id = '0000000000000000' WHERE seq = 3`)
		}, 3, "edited: it names audit key 0000000000000000"},
		{"unedited tail recomputed unkeyed", func(t *testing.T, path string) {
			rechain(t, path, 6, nil, func(*Record) string { return "" })
		}, 6, "downgraded"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mandate.db")
			keyedTrail(t, path, 6, WithAuditKey(k))
			if _, err := verifyWith(t, path, k); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			c.tamper(t, path)
			res, err := verifyWith(t, path, k)
			var ce *ChainError
			if !errors.As(err, &ce) || ce.Seq != c.seq || !strings.HasPrefix(ce.Reason, c.reason) {
				t.Fatalf("got %+v, %v; want %s at record %d", res, err, c.reason, c.seq)
			}
			if res.Count != c.seq-1 {
				t.Fatalf("intact count %d, want %d", res.Count, c.seq-1)
			}
		})
	}
}

// TestKeyedChainStrippedWhole: rewriting every record as plain leaves a
// chain that links, but it is no longer anchored; callers must not call it
// intact when a key was given (cmd/mandate fails it).
func TestKeyedChainStrippedWhole(t *testing.T) {
	k := testAuditKey(t)
	path := filepath.Join(t.TempDir(), "mandate.db")
	keyedTrail(t, path, 4, WithAuditKey(k))
	rechain(t, path, 1, func(r *Record) { r.Decision = "deny" }, func(*Record) string { return "" })
	res, err := verifyWith(t, path, k)
	if err != nil || res.Anchored() || res.Count != 4 {
		t.Fatalf("got %+v, %v; want 4 linked records, not anchored", res, err)
	}
}

// TestAppendRefusesForeignHead: a process without the key, or with another
// one, writes nothing after a keyed head.
func TestAppendRefusesForeignHead(t *testing.T) {
	k := testAuditKey(t)
	path := filepath.Join(t.TempDir(), "mandate.db")
	keyedTrail(t, path, 2, WithAuditKey(k))
	for name, opt := range map[string]Option{"no key": WithAuditKey(nil), "another key": WithAuditKey(testAuditKey(t))} {
		t.Run(name, func(t *testing.T) {
			// With a key, Open refuses; without one, every append does.
			db, err := Open(context.Background(), engineDB(t, path), opt)
			if err == nil {
				defer db.Close()
				err = db.Append(context.Background(), &Record{Agent: "x", Tool: "lookup_order", Phase: PhaseAttempt})
			}
			if !errors.Is(err, ErrKeyedHead) || !strings.Contains(err.Error(), k.ID()) || !strings.Contains(err.Error(), "same key") {
				t.Fatalf("append: %v, want ErrKeyedHead naming %s", err, k.ID())
			}
		})
	}
	if res, err := verifyWith(t, path, k); err != nil || res.Count != 2 {
		t.Fatalf("after the refusals: %+v, %v; want the 2 keyed records", res, err)
	}
}

func TestLoadAuditKey(t *testing.T) {
	dir := t.TempDir()
	secret := bytes.Repeat([]byte{0x5a, 0xc3}, 16)
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want, _ := NewAuditKey(secret)
	for _, c := range []struct {
		name, path, err string
	}{
		{"hex", write("hex", []byte(hex.EncodeToString(secret)+"\n"), 0o600), ""},
		{"raw", write("raw", secret, 0o400), ""},
		{"group readable", write("g", []byte(hex.EncodeToString(secret)), 0o640), "lets others read it"},
		{"world readable", write("w", []byte(hex.EncodeToString(secret)), 0o644), "chmod 600"},
		{"short", write("short", secret[:31], 0o600), "at least 32"},
		{"short hex", write("shorthex", []byte(hex.EncodeToString(secret[:31])), 0o600), ""}, // 62 hex digits are 62 raw bytes
		{"missing", filepath.Join(dir, "nope"), "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := LoadAuditKey(c.path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an error with %q", err, c.err)
				}
				if _, err := Open(context.Background(), filepath.Join(dir, c.name+".db"), AuditKeyFile(c.path)); err == nil {
					t.Fatal("Open accepted the key file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.name != "short hex" && k.ID() != want.ID() {
				t.Fatalf("id %s, want %s", k.ID(), want.ID())
			}
			if s := k.String(); strings.Contains(s, hex.EncodeToString(secret[:4])) {
				t.Fatalf("String shows the secret: %s", s)
			}
		})
	}
}
