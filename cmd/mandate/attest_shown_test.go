package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/attest"
	"github.com/mandatehq/mandate/storage"
)

// TestExampleVerifierShownCustomer: a lookup's record names the customer it
// showed (shown_customer, migration 0026), which its hash and leaf cover.
// The outside verifier of docs/attestation.md (examples/verifyproof) must
// accept the key and hash it, or a proof of who saw a customer's data
// cannot be checked without Mandate; a record altered to name another
// customer must still fail it.
func TestExampleVerifierShownCustomer(t *testing.T) {
	dir := t.TempDir()
	db := attestTrail(t, 3)
	func() {
		ctx := context.Background()
		st, err := storage.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.Append(ctx, &storage.Record{Agent: "demo-agent", Tool: "find_customer", Phase: storage.PhaseAttempt, ActionID: "act_look",
			Decision: "allow", Outcome: storage.OutcomeRead, ShownCustomer: "cus_ada", Args: json.RawMessage(`{"email":"ada@example.com"}`)}); err != nil {
			t.Fatal(err)
		}
	}()
	k, vk := keygen(t, dir, "k.key", "audit.example.com/log")
	cp := mandateOK(t, "audit", "checkpoint", "--db", db, "--key", k)
	bundle := filepath.Join(dir, "bundle.json")
	mandateOK(t, "audit", "prove", "--db", db, "--action", "act_look", "--checkpoint", writeTemp(t, dir, "cp", cp), "--out", bundle)
	if out := mandateOK(t, "audit", "verify-proof", "--key", vk, bundle); !strings.HasPrefix(out, "ok: 1 record") {
		t.Fatalf("verify-proof: %s", out)
	}

	example := filepath.Join(dir, "verifyproof")
	build := exec.Command("go", "build", "-o", example, "./examples/verifyproof")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example verifier: %v\n%s", err, out)
	}
	out, err := exec.Command(example, bundle, vk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok: record 4 ") {
		t.Fatalf("the example verifier refused a lookup's record that names the customer shown: %v\n%s", err, out)
	}

	var b attest.Bundle
	raw, _ := os.ReadFile(bundle)
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	rec := compactRecord(t, b.Entries[0].Record)
	if !strings.Contains(rec, `"shown_customer":"cus_ada"`) {
		t.Fatalf("the bundle does not carry shown_customer:\n%s", rec)
	}
	b.Entries[0].Record = json.RawMessage(strings.Replace(rec, `"shown_customer":"cus_ada"`, `"shown_customer":"cus_bob"`, 1))
	edited, _ := json.Marshal(b)
	altered := writeTemp(t, dir, "altered.json", string(edited))
	if out, err := exec.Command(example, altered, vk).CombinedOutput(); err == nil || !strings.Contains(string(out), "NOT in") {
		t.Fatalf("the example verifier accepted a record altered to name another customer: %v\n%s", err, out)
	}
}
