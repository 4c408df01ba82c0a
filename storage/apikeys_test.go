package storage

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// TestAPIKeys: a key is printed once as mk_<id>_<secret>, only its hash is
// stored, it verifies only whole, and revocation and last use show in the
// list.
func TestAPIKeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	if _, _, err := db.CreateAPIKey(ctx, "demo agent", time.Time{}); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("bad name: %v", err)
	}
	key, k, err := db.CreateAPIKey(ctx, "demo-agent", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	id, secret, ok := SplitAPIKey(key)
	if !ok || id != k.ID {
		t.Fatalf("key %q does not split into its id %s", key, k.ID)
	}
	var stored string
	if err := db.db.QueryRowContext(ctx, `SELECT secret_hash FROM api_keys WHERE id = ?`, id).Scan(&stored); err != nil || strings.Contains(stored, secret) || stored != tokenHash(secret) {
		t.Fatalf("stored %q, want the SHA-256 of the secret only (%v)", stored, err)
	}
	for _, bad := range []string{"", "mk_", "mk_" + id, "mk_" + id + "_" + strings.Repeat("0", 64), strings.ToUpper(key), key + "0", "xx_" + id + "_" + secret} {
		if _, err := db.VerifyAPIKey(ctx, bad); mandate.ErrorCode(err) != mandate.ENOTFOUND {
			t.Fatalf("VerifyAPIKey(%q) = %v, want not_found", bad, err)
		}
	}
	got, err := db.VerifyAPIKey(ctx, key)
	if err != nil || got.Identity != "demo-agent" || !got.Active(now) {
		t.Fatalf("VerifyAPIKey: %+v %v", got, err)
	}
	if err := db.TouchAPIKey(ctx, id, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAPIKey(ctx, id, now); err != nil { // older: ignored
		t.Fatal(err)
	}
	if _, err := db.RevokeAPIKey(ctx, "000000000000"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, err := db.RevokeAPIKey(ctx, id); err != nil {
		t.Fatal(err)
	}
	keys, err := db.APIKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].RevokedAt.IsZero() || !keys[0].LastUsed.Equal(now.Add(time.Minute)) || keys[0].Active(now) {
		t.Fatalf("APIKeys: %+v %v", keys, err)
	}
	got, err = db.VerifyAPIKey(ctx, key)
	if err != nil || got.Active(now) {
		t.Fatalf("a revoked key must verify as itself, inactive: %+v %v", got, err)
	}
}
