package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/storage"
)

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
