package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/attest"
	"github.com/mandatehq/mandate/storage"
)

// TestProveSinceCheckpoint is the "done when" through the built
// binary: an auditor holding only the verifier key and a checkpoint
// published earlier checks, without the database, that a newer signed
// checkpoint extends it; a trail rewritten with its chain recomputed, and a
// cut one, cannot produce a bundle that passes.
func TestProveSinceCheckpoint(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 20, "act_old")
	key, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	lastWeek := writeTemp(t, dir, "last-week.checkpoint", mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key))
	appendTrail(t, db, 7, "act_new")
	mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key)

	// On the auditor's side: the bundle, the verifier key and their own
	// copy of last week's checkpoint; no database.
	bundle := filepath.Join(dir, "new.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_new", "--since-checkpoint", lastWeek, "--out", bundle)
	out := mandateOK(t, "audit", "verify-proof", "--key", vkey, "--since-checkpoint", lastWeek, bundle)
	if !strings.Contains(out, "checkpoint of 31 records extends yours of 22 records") || !strings.Contains(out, "ok: 2 records of action act_new") {
		t.Fatalf("verify-proof --since-checkpoint: %s", out)
	}
	// A bundle of the checkpoint itself needs no proof; one without a
	// consistency proof against an older checkpoint says what is missing.
	same := filepath.Join(dir, "same.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_old", "--checkpoint", lastWeek, "--out", same)
	mandateOK(t, "audit", "verify-proof", "--key", vkey, "--since-checkpoint", lastWeek, same)
	plain := filepath.Join(dir, "plain.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_new", "--out", plain)
	if msg := mandateFails(t, "audit", "verify-proof", "--key", vkey, "--since-checkpoint", lastWeek, plain); !strings.Contains(msg, "holds no consistency proof") {
		t.Fatalf("bundle without a consistency proof: %s", msg)
	}

	// A consistency-only bundle (no --action), altered in transit.
	only := filepath.Join(dir, "only.json")
	mandateOK(t, "audit", "prove", "--db", db, "--since-checkpoint", lastWeek, "--out", only)
	mandateOK(t, "audit", "verify-proof", "--key", vkey, "--since-checkpoint", lastWeek, only)
	// Without the reader's checkpoint its proof cannot be checked: an exit
	// 0 would pass it unchecked, however altered.
	for _, b := range []string{only, filepath.Join(dir, "new.json")} {
		out, errOut, err := runMandate(t, nil, "audit", "verify-proof", "--key", vkey, b)
		if err == nil || !strings.Contains(errOut, "holds a proof that its checkpoint extends an older one of 22 records, which only your own copy of that checkpoint can check: give it with --since-checkpoint FILE") {
			t.Fatalf("verify-proof of a bundle with a consistency proof, without --since-checkpoint: %v\nstdout %q\nstderr %q", err, out, errOut)
		}
	}
	var b attest.Bundle
	raw, _ := os.ReadFile(only)
	if err := json.Unmarshal(raw, &b); err != nil || b.Consistency == nil || len(b.Consistency.Proof) == 0 {
		t.Fatalf("consistency-only bundle: %v %s", err, raw)
	}
	if len(b.Consistency.Proof) == 1 {
		b.Consistency.Proof[0] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	} else {
		b.Consistency.Proof[0], b.Consistency.Proof[1] = b.Consistency.Proof[1], b.Consistency.Proof[0]
	}
	altered, _ := json.Marshal(b)
	if msg := mandateFails(t, "audit", "verify-proof", "--key", vkey, "--since-checkpoint", lastWeek, writeTemp(t, dir, "altered.json", string(altered))); !strings.Contains(msg, "REWRITTEN") {
		t.Fatalf("altered consistency proof: %s", msg)
	}

	// A writer without the keys rewrites record 5 and recomputes every
	// later hash and the tree. The signer refuses to sign the rewritten
	// trail; signed anyway (by a version without that check, or by whoever
	// holds the signer key), prove refuses, and a bundle of the new
	// checkpoint with the old proof does not pass.
	raw2 := tamperDB(t, db)
	if _, err := raw2.Exec(`UPDATE audit SET args = '{"order_id":"ord_forged"}' WHERE seq = 5`); err != nil {
		t.Fatal(err)
	}
	plainRechain(t, raw2, 5)
	// The stored tree still holds the old leaves (it would sign the trail
	// as it was); the writer drops it, so the next open rebuilds it from
	// the rewritten rows.
	if _, err := raw2.Exec(`DELETE FROM merkle_nodes`); err != nil {
		t.Fatal(err)
	}
	raw2.Close()
	// (The fixture has no actions rows, so only the cross-check fails.)
	if out := mandateFails(t, "audit", "verify", "--db", db); !strings.HasPrefix(out, "unanchored: 31 records") {
		t.Fatalf("plain verify after the rewrite: %s", out)
	}
	if msg := mandateFails(t, "audit", "checkpoint", "--db", db, "--key", key); !strings.Contains(msg, "refusing to sign a checkpoint of 31 records: REWRITTEN") {
		t.Fatalf("checkpoint of the rewritten trail: %s", msg)
	}
	rewritten := signTreeAnyway(t, db, key)
	if msg := mandateFails(t, "audit", "prove", "--db", db, "--checkpoint", writeTemp(t, dir, "rewritten", rewritten), "--since-checkpoint", lastWeek); !strings.Contains(msg, "no longer hash to the root") {
		t.Fatalf("prove after the rewrite: %s", msg)
	}
	raw3, _ := os.ReadFile(only)
	var good attest.Bundle
	if err := json.Unmarshal(raw3, &good); err != nil {
		t.Fatal(err)
	}
	good.Checkpoint = rewritten
	swapped, _ := json.Marshal(good)
	if msg := mandateFails(t, "audit", "verify-proof", "--key", vkey, "--since-checkpoint", lastWeek, writeTemp(t, dir, "swapped.json", string(swapped))); !strings.Contains(msg, "REWRITTEN: the signed tree of 31 records does not extend your checkpoint of 22 records") {
		t.Fatalf("rewritten trail's checkpoint: %s", msg)
	}
}

// TestSinceCheckpointWithoutAuditKey: the truncation case on a
// keyed trail. Cutting records off the end leaves a keyed chain that
// `audit verify --audit-key` calls intact; --since-checkpoint names the
// size it cannot reach, also for an auditor who holds the verifier key but
// not the audit key (the consistency check does not need it).
func TestSinceCheckpointWithoutAuditKey(t *testing.T) {
	dir := t.TempDir()
	auditKey := filepath.Join(dir, "audit.key")
	mandateOK(t, "audit", "mackey", "--out", auditKey)
	db := filepath.Join(dir, "mandate.db")
	ctx := context.Background()
	write := func(n, from int) {
		s, err := storage.Open(ctx, db, storage.AuditKeyFile(auditKey))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := range n {
			if err := s.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "get_order", Phase: storage.PhaseAttempt,
				Decision: "allow", Outcome: "read", Args: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%d"}`, from+i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(100, 0)
	key, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	cp := writeTemp(t, dir, "cp", mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key))
	write(50, 100)
	raw := tamperDB(t, db)
	if _, err := raw.Exec(`DELETE FROM audit WHERE seq > 30`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if out := mandateOK(t, "audit", "verify", "--db", db, "--audit-key", auditKey); !strings.HasPrefix(out, "intact (keyed from seq 1): 30 records") {
		t.Fatalf("verify --audit-key after the cut: %s", out)
	}
	for _, args := range [][]string{
		{"--audit-key", auditKey},
		{}, // the auditor without the audit key
	} {
		msg := mandateFails(t, append([]string{"audit", "verify", "--db", db, "--since-checkpoint", cp, "--key", vkey}, args...)...)
		if !strings.Contains(msg, "TRUNCATED: the trail has 30 records, but the checkpoint covers 100") {
			t.Fatalf("verify --since-checkpoint %v after the cut: %s", args, msg)
		}
	}
}

// TestProveRefusesDamagedTree: the stored tree is derived data a database
// writer can damage; prove checks each proof it writes against the
// checkpoint, so the auditor never gets a bundle that fails on their side
// for a reason nobody can see. Dropping the stored tree rebuilds it.
func TestProveRefusesDamagedTree(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 8, "act_a") // act_a is records 9 and 10: leaves 8 and 9
	key, vkey := keygen(t, dir, "k.key", "audit.example.com/log")
	mandateOK(t, "audit", "checkpoint", "--db", db, "--key", key)
	raw := tamperDB(t, db)
	if _, err := raw.Exec(`UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 0 AND pos = 9`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if msg := mandateFails(t, "audit", "prove", "--db", db, "--action", "act_a"); !strings.Contains(msg, "gives record 10 a proof that does not lead to the checkpoint's root") {
		t.Fatalf("prove on a damaged tree: %s", msg)
	}
	raw = tamperDB(t, db)
	if _, err := raw.Exec(`DELETE FROM merkle_nodes`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	bundle := filepath.Join(dir, "a.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_a", "--out", bundle)
	if out := mandateOK(t, "audit", "verify-proof", "--key", vkey, bundle); !strings.HasPrefix(out, "ok: 2 records of action act_a") {
		t.Fatalf("verify-proof after the rebuild: %s", out)
	}
}

// TestExportKeyIDEveryFormat: key_id is hashed into both the chain and the
// Merkle leaf, so every export format carries it (and OCSF the duration in
// microseconds the leaf uses), or a copy in a SIEM could not be checked.
func TestExportKeyIDEveryFormat(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "audit.key")
	mandateOK(t, "audit", "mackey", "--out", keyFile)
	k, err := storage.LoadAuditKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "mandate.db")
	ctx := context.Background()
	s, err := storage.Open(ctx, db, storage.AuditKeyFile(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "get_order", Phase: storage.PhaseAttempt, Decision: "allow",
			Outcome: "read", Args: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%d"}`, i)), Duration: time.Duration(1234+i) * time.Microsecond}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	jsonl := strings.Split(strings.TrimSpace(mandateOK(t, "audit", "export", "--db", db)), "\n")
	ocsf := strings.Split(strings.TrimSpace(mandateOK(t, "audit", "export", "--db", db, "--format", "ocsf")), "\n")
	if len(jsonl) != 3 || len(ocsf) != 3 {
		t.Fatalf("exported %d jsonl and %d ocsf lines, want 3", len(jsonl), len(ocsf))
	}
	for i := range jsonl {
		var j struct {
			KeyID    string `json:"key_id"`
			Duration int64  `json:"duration"`
		}
		var o struct {
			Unmapped struct {
				KeyID      string `json:"key_id"`
				DurationUS int64  `json:"duration_us"`
			} `json:"unmapped"`
		}
		if err := json.Unmarshal([]byte(jsonl[i]), &j); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(ocsf[i]), &o); err != nil {
			t.Fatal(err)
		}
		if j.KeyID != k.ID() || o.Unmapped.KeyID != k.ID() || j.Duration != int64(1234+i) || o.Unmapped.DurationUS != j.Duration {
			t.Fatalf("record %d: jsonl %+v, ocsf %+v; want key_id %s, duration %d", i+1, j, o.Unmapped, k.ID(), 1234+i)
		}
	}
	csvOut := mandateOK(t, "audit", "export", "--db", db, "--format", "csv")
	header, first, _ := strings.Cut(csvOut, "\n")
	if !strings.Contains(header, "key_id") || strings.Count(csvOut, k.ID()) != 3 || !strings.Contains(first, k.ID()) {
		t.Fatalf("csv export:\n%s", csvOut)
	}
}

// signTreeAnyway signs the stored tree as it is with the signer key file,
// without the checks `audit checkpoint` makes first.
func signTreeAnyway(t *testing.T, path, keyFile string) string {
	t.Helper()
	ctx := context.Background()
	s, err := attest.LoadSigner(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	size, err := db.TreeSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, err := db.TreeRoot(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	text, err := attest.Sign(attest.Checkpoint{Origin: s.Name(), Size: size, Root: root}, s)
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}
