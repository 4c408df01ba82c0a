package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/attest"
	"github.com/mandatehq/mandate/storage"
)

// attestTrail writes n noise records, then the records of the actions
// named, two each, into a new database, and returns its path.
func attestTrail(t *testing.T, n int, actions ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mandate.db")
	appendTrail(t, path, n, actions...)
	return path
}

func appendTrail(t *testing.T, path string, n int, actions ...string) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range n {
		if err := db.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "get_order", Phase: storage.PhaseAttempt,
			Decision: "allow", Outcome: "read", Args: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%d"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range actions {
		for _, r := range []*storage.Record{
			{Agent: "demo-agent", Tool: "refund_order", Phase: storage.PhaseAttempt, Decision: "allow", ActionID: a, Rule: "amount <= 50",
				Args: json.RawMessage(`{"amount": "30.00", "currency":"USD", "order_id":"ord_1001", "reason":"<b>broken</b> & late"}`)},
			{Agent: "demo-agent", Tool: "refund_order", Phase: storage.PhaseOutcome, Decision: "allow", ActionID: a, Outcome: storage.StatusExecuted},
		} {
			if err := db.Append(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// mandateOK runs the binary and fails the test unless it exits 0.
func mandateOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runMandate(t, nil, args...)
	if err != nil {
		t.Fatalf("mandate %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// mandateFails runs the binary, wants exit status 1, and returns stdout and stderr.
func mandateFails(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runMandate(t, nil, args...)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("mandate %s: %v, want exit status 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out + errOut
}

// keygen makes a signer key file and returns its path and verifier key.
func keygen(t *testing.T, dir, file, name string) (string, string) {
	t.Helper()
	path := filepath.Join(dir, file)
	vkey := strings.TrimSpace(mandateOK(t, "audit", "keygen", "--name", name, "--out", path))
	return path, vkey
}

func TestAuditKeygen(t *testing.T) {
	dir := t.TempDir()
	path, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	if !strings.HasPrefix(vkey, "audit.example.com/log+") {
		t.Fatalf("verifier key %q", vkey)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	before, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(before), "PRIVATE+KEY+audit.example.com/log+") {
		t.Fatal("the key file does not hold a signer key")
	}
	if msg := mandateFails(t, "audit", "keygen", "--name", "other", "--out", path); !strings.Contains(msg, "already exists") {
		t.Fatalf("overwriting: %s", msg)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("keygen replaced an existing key file")
	}
	if _, _, err := runMandate(t, nil, "audit", "keygen", "--out", filepath.Join(dir, "x")); err == nil {
		t.Fatal("keygen without --name succeeded")
	}
}

func TestAuditProveAndVerifyProof(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 37, "act_a", "act_b")
	k1, vk1 := keygen(t, dir, "k1.key", "audit.example.com/log")
	k2, vk2 := keygen(t, dir, "k2.key", "audit.example.com/log") // a rotation: same name, new key
	k3, vk3 := keygen(t, dir, "k3.key", "elsewhere.example.com/log")

	if msg := mandateFails(t, "audit", "checkpoint", "--db", db); !strings.Contains(msg, "no checkpoint") {
		t.Fatalf("checkpoint before any was signed: %s", msg)
	}
	cp1 := mandateOK(t, "audit", "checkpoint", "--db", db, "--key", k1)
	if !strings.HasPrefix(cp1, "audit.example.com/log\n41\n") {
		t.Fatalf("checkpoint:\n%s", cp1)
	}
	if got := mandateOK(t, "audit", "checkpoint", "--db", db); got != cp1 {
		t.Fatalf("latest stored checkpoint:\n%s\nwant\n%s", got, cp1)
	}
	cp3File := filepath.Join(dir, "cp3")
	if err := os.WriteFile(cp3File, []byte(mandateOK(t, "audit", "checkpoint", "--db", db, "--key", k3)), 0o644); err != nil {
		t.Fatal(err)
	}

	// A bundle against the latest stored checkpoint of audit.example.com/log.
	bundle := filepath.Join(dir, "bundle.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_a", "--checkpoint", writeTemp(t, dir, "cp1", cp1), "--out", bundle)
	if out := mandateOK(t, "audit", "verify-proof", "--key", vk1, bundle); !strings.HasPrefix(out, "ok: 2 records of action act_a") {
		t.Fatalf("verify-proof: %s", out)
	}
	example := filepath.Join(dir, "verifyproof")
	build := exec.Command("go", "build", "-o", example, "./examples/verifyproof")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example verifier: %v\n%s", err, out)
	}
	runExample := func(bundle string, keys ...string) (string, error) {
		out, err := exec.Command(example, append([]string{bundle}, keys...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := runExample(bundle, vk1); err != nil || strings.Count(out, "ok: record") != 2 {
		t.Fatalf("example verifier: %v\n%s", err, out)
	}

	var b attest.Bundle
	raw, _ := os.ReadFile(bundle)
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if b.Entries[0].LeafIndex != 37 || b.Entries[1].LeafIndex != 38 {
		t.Fatalf("leaf indexes %d, %d; want 37, 38", b.Entries[0].LeafIndex, b.Entries[1].LeafIndex)
	}
	cp3, _ := os.ReadFile(cp3File)
	for _, c := range []struct {
		name    string
		edit    func(b *attest.Bundle)
		keys    []string
		want    string // from verify-proof
		example string // from the example verifier
	}{
		{"tampered amount", func(b *attest.Bundle) {
			b.Entries[0].Record = json.RawMessage(strings.Replace(string(b.Entries[0].Record), "30.00", "3000.00", 1))
		}, []string{vk1}, "record 38 is not in the signed tree of 41 records", "record 38 is NOT in"},
		{"tampered approver", func(b *attest.Bundle) {
			b.Entries[1].Record = json.RawMessage(strings.Replace(compactRecord(t, b.Entries[1].Record), `"approver":""`, `"approver":"alice"`, 1))
		}, []string{vk1}, "record 39 is not in the signed tree", "record 39 is NOT in"},
		// encoding/json reads keys in any case and keeps the last of
		// duplicates; jq reads "deny" and "alice" here, the leaf the rest.
		{"key repeated in another case", func(b *attest.Bundle) {
			r := strings.Replace(compactRecord(t, b.Entries[0].Record), `"decision":"allow"`, `"decision":"deny"`, 1)
			b.Entries[0].Record = json.RawMessage(strings.TrimSuffix(r, "}") + `,"Decision":"allow"}`)
		}, []string{vk1}, "entry 1: the record cannot be read: it is not written as `mandate audit export` writes it", "key \"Decision\" is repeated or unknown"},
		{"key repeated", func(b *attest.Bundle) {
			b.Entries[1].Record = json.RawMessage(strings.Replace(compactRecord(t, b.Entries[1].Record), `"approver":""`, `"approver":"alice","approver":""`, 1))
		}, []string{vk1}, "entry 2: the record cannot be read: it is not written as", "key \"approver\" is repeated or unknown"},
		{"unknown key", func(b *attest.Bundle) {
			b.Entries[1].Record = json.RawMessage(strings.TrimSuffix(compactRecord(t, b.Entries[1].Record), "}") + `,"approved_by":"ceo@example.com"}`)
		}, []string{vk1}, "entry 2: the record cannot be read: it is not written as", "key \"approved_by\" is repeated or unknown"},
		{"wrong leaf index", func(b *attest.Bundle) { b.Entries[1].LeafIndex = 37 }, []string{vk1},
			"leaf index 37 does not match the record's seq 39", "wrong leaf index"},
		{"shortened proof", func(b *attest.Bundle) { b.Entries[0].Inclusion = b.Entries[0].Inclusion[1:] }, []string{vk1},
			"record 38 is not in the signed tree", "NOT in"},
		{"checkpoint of another key", func(b *attest.Bundle) { b.Checkpoint = string(cp3) }, []string{vk1},
			"not signed by any of the given verifier keys (it is signed by elsewhere.example.com/log+", "no verifiable signatures"},
		{"verified with another key", func(*attest.Bundle) {}, []string{vk3}, "not signed by any of the given verifier keys", "no verifiable signatures"},
		{"checkpoint altered", func(b *attest.Bundle) { b.Checkpoint = strings.Replace(b.Checkpoint, "\n41\n", "\n42\n", 1) }, []string{vk1},
			"does not verify", "invalid signature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := b
			bad.Entries = append([]attest.Entry(nil), b.Entries...)
			c.edit(&bad)
			// Written as prove writes bundles: string escapes kept as they
			// are (docs/attestation.md).
			var raw strings.Builder
			if err := newEncoder(&raw).Encode(bad); err != nil {
				t.Fatal(err)
			}
			file := writeTemp(t, t.TempDir(), "bad.json", raw.String())
			var args []string
			for _, k := range c.keys {
				args = append(args, "--key", k)
			}
			if msg := mandateFails(t, append(append([]string{"audit", "verify-proof"}, args...), file)...); !strings.Contains(msg, c.want) {
				t.Fatalf("verify-proof said %q, want %q", msg, c.want)
			}
			if out, err := runExample(file, c.keys...); err == nil || !strings.Contains(out, c.example) {
				t.Fatalf("example verifier: %v, %q; want a failure with %q", err, out, c.example)
			}
		})
	}

	// The output names one action and counts its records: a bundle mixing
	// actions, or repeating a record, says something prove never wrote.
	bundleB := filepath.Join(dir, "bundle-b.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_b", "--checkpoint", writeTemp(t, dir, "cp1", cp1), "--out", bundleB)
	var bb attest.Bundle
	raw, _ = os.ReadFile(bundleB)
	if err := json.Unmarshal(raw, &bb); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		entries []attest.Entry
		want    string
	}{
		"two actions":     {append(append([]attest.Entry(nil), b.Entries...), bb.Entries...), `entry 3 is a record of action "act_b", entry 1 of "act_a"`},
		"a record twice":  {append(append([]attest.Entry(nil), b.Entries...), b.Entries[1]), "entry 3: leaf index 38 does not follow the entry before's 38"},
		"records swapped": {[]attest.Entry{b.Entries[1], b.Entries[0]}, "entry 2: leaf index 37 does not follow the entry before's 38"},
	} {
		mixed := b
		mixed.Entries = c.entries
		var w strings.Builder
		newEncoder(&w).Encode(mixed)
		if msg := mandateFails(t, "audit", "verify-proof", "--key", vk1, writeTemp(t, t.TempDir(), "mixed.json", w.String())); !strings.Contains(msg, c.want) {
			t.Fatalf("%s: verify-proof said %q, want %q", name, msg, c.want)
		}
	}

	// Key rotation: records after a checkpoint by the new key are proven
	// against it; a verifier holding both keys accepts both bundles.
	appendTrail(t, db, 3, "act_c")
	if msg := mandateFails(t, "audit", "prove", "--db", db, "--action", "act_c"); !strings.Contains(msg, "newer than the checkpoint") {
		t.Fatalf("prove before a checkpoint covers the action: %s", msg)
	}
	mandateOK(t, "audit", "checkpoint", "--db", db, "--key", k2)
	bundleC := filepath.Join(dir, "c.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_c", "--out", bundleC)
	keyFile := writeTemp(t, dir, "verifiers", "# old and new\n"+vk1+"\n\n"+vk2+"\n")
	for _, bf := range []string{bundle, bundleC} {
		if out := mandateOK(t, "audit", "verify-proof", "--key", keyFile, bf); !strings.HasPrefix(out, "ok:") {
			t.Fatalf("verify-proof with both keys: %s", out)
		}
	}
	if msg := mandateFails(t, "audit", "verify-proof", "--key", vk1, bundleC); !strings.Contains(msg, "not signed by any") {
		t.Fatalf("the old key alone accepted the new checkpoint: %s", msg)
	}
	if out, err := runExample(bundleC, vk1, vk2); err != nil || strings.Count(out, "ok: record") != 2 {
		t.Fatalf("example verifier with both keys: %v\n%s", err, out)
	}
	if msg := mandateFails(t, "audit", "prove", "--db", db, "--action", "act_none"); !strings.Contains(msg, "no audit records") {
		t.Fatalf("prove of an unknown action: %s", msg)
	}
}

// compactRecord is a bundle entry's record as prove writes it, compact.
func compactRecord(t *testing.T, rec json.RawMessage) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, rec); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func writeTemp(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAuditVerifySinceCheckpointTruncation is the truncation case:
// 100 records, a checkpoint, 50 more; the last 120 deleted with SQL, which
// leaves a chain that `audit verify` alone finds intact.
// TestAuditProveOutOwnerOnly: a bundle holds full records, personal data
// included, so --out leaves it readable by its owner only, also when it
// replaces a file anyone could read.
func TestAuditProveOutOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 3, "act_a")
	key, _ := keygen(t, dir, "k.key", "audit.example.com/log")
	mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key)
	existing := writeTemp(t, dir, "old.proof.json", "{}")
	if err := os.Chmod(existing, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{filepath.Join(dir, "new.proof.json"), existing} {
		mandateOK(t, "audit", "prove", "--db", db, "--action", "act_a", "--out", out)
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %04o, want 0600", out, fi.Mode().Perm())
		}
	}
}

func TestAuditVerifySinceCheckpointTruncation(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 100)
	key, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	cp := writeTemp(t, dir, "cp", mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key))
	appendTrail(t, db, 50)
	if out := mandateOK(t, "audit", "verify", "--db", db, "--since-checkpoint", cp, "--key", vkey); !strings.Contains(out, "ok: the trail of 150 records extends the checkpoint of audit.example.com/log at size 100") {
		t.Fatalf("verify --since-checkpoint before the cut: %s", out)
	}
	raw, err := sql.Open("sqlite", storage.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`DROP TRIGGER audit_no_update`, `DROP TRIGGER audit_no_delete`, `DELETE FROM audit WHERE seq > 30`} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	raw.Close()
	if out := mandateOK(t, "audit", "verify", "--db", db); !strings.HasPrefix(out, "unanchored: 30 records") {
		t.Fatalf("plain verify after the cut: %s", out)
	}
	msg := mandateFails(t, "audit", "verify", "--db", db, "--since-checkpoint", cp, "--key", vkey)
	if !strings.Contains(msg, "TRUNCATED") || !strings.Contains(msg, "the checkpoint covers 100") || !strings.Contains(msg, "records 31 to 100 were removed") {
		t.Fatalf("verify --since-checkpoint after the cut: %s", msg)
	}
	// Without --key, or with a checkpoint that cannot be read, verify says
	// so before it verifies anything (it once printed the whole report
	// first).
	for _, args := range [][]string{
		{"--since-checkpoint", cp},
		{"--since-checkpoint", filepath.Join(dir, "missing"), "--key", vkey},
	} {
		out, errOut, err := runMandate(t, nil, append([]string{"audit", "verify", "--db", db}, args...)...)
		if err == nil || out != "" {
			t.Fatalf("verify %v: %v; want a refusal before any report, got stdout:\n%s\nstderr: %s", args, err, out, errOut)
		}
	}
	if _, errOut, _ := runMandate(t, nil, "audit", "verify", "--db", db, "--since-checkpoint", cp); !strings.Contains(errOut, "give the verifier key with --key") {
		t.Fatalf("verify --since-checkpoint without --key: %s", errOut)
	}
}

// TestServeCheckpoints runs serve with a checkpoint key, a directory and a
// URL that refuses the first POST: the checkpoint appears in both, signed.
func TestServeCheckpoints(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 5, "act_a")
	key, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	var mu sync.Mutex
	var posts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		posts = append(posts, string(body))
		if len(posts) == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	cpDir := filepath.Join(dir, "checkpoints")
	cmd := exec.Command(bin, "serve", "--agent", "demo-agent", "--db", db, "--store", filepath.Join(dir, "store.db"),
		"--checkpoint-key", key, "--checkpoint-dir", cpDir, "--checkpoint-url", srv.URL+"/cp?token=s3cret")
	cmd.Env = childEnv(nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr auditBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	waitFor(t, "latest.checkpoint", func() bool { _, err := os.Stat(filepath.Join(cpDir, "latest.checkpoint")); return err == nil })
	text, err := os.ReadFile(filepath.Join(cpDir, "latest.checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	known, err := attest.Verifiers([]string{vkey})
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := attest.Open(text, known)
	if err != nil || cp.Size != 7 {
		t.Fatalf("checkpoint %+v, %v; want size 7", cp, err)
	}
	if same, _ := os.ReadFile(filepath.Join(cpDir, "7.checkpoint")); string(same) != string(text) {
		t.Fatal("7.checkpoint differs from latest.checkpoint")
	}
	waitFor(t, "the retried POST", func() bool { mu.Lock(); defer mu.Unlock(); return len(posts) >= 2 })
	mu.Lock()
	if posts[1] != string(text) {
		t.Fatalf("posted %q, want the checkpoint", posts[1])
	}
	mu.Unlock()
	keyText, _ := os.ReadFile(key)
	secret := strings.TrimSpace(string(keyText))
	// PRIVATE+KEY+<name>+<hash>+<key data>: the key data is the fifth
	// field (its base64 may itself hold '+').
	if f := strings.SplitN(secret, "+", 5); len(f) == 5 && len(f[4]) >= 40 {
		secret = f[4]
	} else {
		t.Fatalf("signer key file %q is not PRIVATE+KEY+name+hash+data", secret)
	}
	if s := stderr.String(); strings.Contains(s, secret) || strings.Contains(s, "s3cret") {
		t.Fatalf("the logs hold the signer key or the URL's token:\n%s", s)
	}
	// The checkpoint is in the database too.
	if got := mandateOK(t, "audit", "checkpoint", "--db", db); got != string(text) {
		t.Fatalf("stored checkpoint %q, want %q", got, text)
	}
}

func TestServeCheckpointKeyErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := writeTemp(t, dir, "garbage.key", "not a key\n")
	_, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	verifierOnly := writeTemp(t, dir, "verifier.key", vkey+"\n")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"--checkpoint-key", filepath.Join(dir, "nope.key")}, "nope.key"},
		{"garbage", []string{"--checkpoint-key", garbage}, "not a signer key"},
		{"a verifier key", []string{"--checkpoint-key", verifierOnly}, "not a signer key"},
		{"a directory", []string{"--checkpoint-key", dir}, "checkpoint key"},
		{"dir without key", []string{"--checkpoint-dir", dir}, "need --checkpoint-key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"serve", "--agent", "demo-agent", "--db", filepath.Join(dir, "m.db"), "--store", filepath.Join(dir, "s.db")}, c.args...)
			_, stderr, err := runMandate(t, nil, args...)
			if err == nil || !strings.Contains(stderr, c.want) {
				t.Fatalf("serve %v: %v, stderr %q; want a failure naming %q", c.args, err, stderr, c.want)
			}
			if strings.Contains(stderr, "not a key") {
				t.Fatal("the error quotes the key file")
			}
		})
	}
}

// TestAuditExportLeafIndex checks that every export format carries the
// chain (prev_hash, hash) and the leaf index, so a copy stays checkable.
func TestAuditExportLeafIndex(t *testing.T) {
	db := attestTrail(t, 3, "act_a")
	for _, format := range []string{"jsonl", "ocsf", "csv"} {
		t.Run(format, func(t *testing.T) {
			out := mandateOK(t, "audit", "export", "--db", db, "--format", format)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if format == "csv" {
				rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
				if err != nil {
					t.Fatal(err)
				}
				header := rows[0]
				col := map[string]int{}
				for i, h := range header {
					col[h] = i
				}
				for _, name := range []string{"prev_hash", "hash", "leaf_index"} {
					if _, ok := col[name]; !ok {
						t.Fatalf("CSV header %v has no %s", header, name)
					}
				}
				for i, cells := range rows[1:] {
					if cells[col["leaf_index"]] != fmt.Sprint(i) || cells[col["seq"]] != fmt.Sprint(i+1) || len(cells[col["hash"]]) != 64 {
						t.Fatalf("CSV row %d: %v", i, cells)
					}
				}
				return
			}
			for i, l := range lines {
				var r struct {
					Seq       int64  `json:"seq"`
					LeafIndex *int64 `json:"leaf_index"`
					PrevHash  string `json:"prev_hash"`
					Hash      string `json:"hash"`
					Unmapped  *struct {
						Seq       int64  `json:"seq"`
						LeafIndex *int64 `json:"leaf_index"`
						PrevHash  string `json:"prev_hash"`
						Hash      string `json:"hash"`
					} `json:"unmapped"`
				}
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatal(err)
				}
				if u := r.Unmapped; u != nil {
					r.Seq, r.LeafIndex, r.PrevHash, r.Hash = u.Seq, u.LeafIndex, u.PrevHash, u.Hash
				}
				if r.Seq != int64(i+1) || r.LeafIndex == nil || *r.LeafIndex != int64(i) || len(r.PrevHash) != 64 || len(r.Hash) != 64 {
					t.Fatalf("line %d: %s", i, l)
				}
			}
		})
	}
}

// TestAuditCheckpointRefusesFork cuts the last records of a signed trail
// (which the chain alone cannot see) and appends new ones: a checkpoint of
// the new tree would put a second history under the key, so neither
// `audit checkpoint --key` nor serve's checkpointer signs it.
func TestAuditCheckpointRefusesFork(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := attestTrail(t, 10)
	key, _ := keygen(t, dir, "k.key", "audit.example.com/log")
	other, _ := keygen(t, dir, "other.key", "other.example.com/log")
	first := mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key)
	signer, err := attest.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	checkpointerOnce := func() error {
		sdb, err := storage.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		c := &checkpointer{signer: signer, every: time.Hour, publish: make(chan []byte, 1), db: sdb,
			log: slog.New(slog.DiscardHandler), signed: 10} // as start reads it from the stored checkpoint
		return c.once(ctx)
	}

	if _, err := tamperDB(t, db).Exec(`DELETE FROM audit WHERE seq > 8`); err != nil {
		t.Fatal(err)
	}
	const cut = "TRUNCATED: the tree holds 8 records, but "
	if msg := mandateFails(t, "audit", "checkpoint", "--db", db, "--key", key); !strings.Contains(msg, cut+"the last checkpoint signed for audit.example.com/log covers 10") {
		t.Fatalf("checkpoint of a cut trail: %s", msg)
	}
	if err := checkpointerOnce(); err == nil || !strings.Contains(err.Error(), cut+"a checkpoint of 10 was signed for audit.example.com/log") {
		t.Fatalf("checkpointer on a cut trail: %v", err)
	}

	appendTrail(t, db, 5) // 13 records; 9 and 10 are new ones
	const fork = "refusing to sign a checkpoint of 13 records: REWRITTEN: the tree of 13 records does not extend the last checkpoint signed for audit.example.com/log, of 10 records"
	if msg := mandateFails(t, "audit", "checkpoint", "--db", db, "--key", key); !strings.Contains(msg, fork) {
		t.Fatalf("checkpoint of a forked trail: %s", msg)
	}
	if err := checkpointerOnce(); err == nil || !strings.Contains(err.Error(), fork) {
		t.Fatalf("checkpointer on a forked trail: %v", err)
	}
	if got := mandateOK(t, "audit", "checkpoint", "--db", db); got != first {
		t.Fatalf("latest stored checkpoint after the refusals %q, want the first %q", got, first)
	}
	// A key of another origin has signed nothing here: nothing binds it.
	if out := mandateOK(t, "audit", "checkpoint", "--db", db, "--key", other); !strings.HasPrefix(out, "other.example.com/log\n13\n") {
		t.Fatalf("checkpoint by another origin: %s", out)
	}
}

// TestAuditIndexTamper edits audit_index, the unchained search keys, as a
// database writer could: records vanish from filtered exports while the
// chain stays intact. `audit verify` names them and exits 1, and prove,
// which selects by the chained records, still proves every record.
func TestAuditIndexTamper(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 20, "act_a")
	appendTrail(t, db, 5)
	key, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key)
	raw := tamperDB(t, db)
	// What the writer does in a commit nobody waits on (storage indexTail).
	if _, err := raw.Exec(`INSERT INTO audit_index (seq, time, agent, action_id, phase, customer_id, order_id)
		SELECT seq, time, agent, action_id, phase, json_extract(args, '$.customer_id'), json_extract(args, '$.order_id')
		FROM audit WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_index)`); err != nil {
		t.Fatal(err)
	}
	// (The fixture has no actions rows, so the cross-check fails throughout.)
	if out, _, _ := runMandate(t, nil, "audit", "verify", "--db", db); !strings.Contains(out, "search keys (audit_index) agree with the trail: 27 records indexed") {
		t.Fatalf("verify of an intact index: %s", out)
	}
	for _, s := range []string{
		`UPDATE audit_index SET agent = 'someone-else' WHERE seq = 5`,
		`DELETE FROM audit_index WHERE seq = 22`, // act_a's outcome
	} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	out := mandateFails(t, "audit", "verify", "--db", db)
	for _, want := range []string{
		"unanchored: 27 records",
		"search keys (audit_index) DISAGREE with the trail in 2 records",
		"record 5: audit_index gives it another agent than the record has",
		"record 22: not in audit_index",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("verify after editing audit_index:\n%s\nwant %q", out, want)
		}
	}
	bundle := filepath.Join(dir, "b.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_a", "--out", bundle)
	if out := mandateOK(t, "audit", "verify-proof", "--key", vkey, bundle); !strings.HasPrefix(out, "ok: 2 records of action act_a") {
		t.Fatalf("verify-proof of act_a after its outcome left the index: %s", out)
	}
}
