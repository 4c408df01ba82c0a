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

// TestAPIKeyTimesSetByHand: an operator revoking or expiring a key by hand
// in SQL writes the time in the database's own form, not ours: the common
// forms are read as the times they are, and text that is no time counts
// as revoked or expired (fail closed), never as "not revoked" or "never
// expires", and says which column it was.
func TestAPIKeyTimesSetByHand(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	for _, tt := range []struct {
		name, set  string // an SQL SET clause
		revoked    time.Time
		expires    time.Time
		active     bool
		unreadable string
	}{
		{"CURRENT_TIMESTAMP", "revoked_at = CURRENT_TIMESTAMP", time.Time{}, time.Time{}, false, ""},
		{"SQLite datetime text", "revoked_at = '2026-03-01 11:59:00'", now.Add(-time.Minute), time.Time{}, false, ""},
		{"PostgreSQL now()::text", "revoked_at = '2026-03-01 13:59:00.123456+02'", now.Add(-time.Minute + 123456*time.Microsecond), time.Time{}, false, ""},
		{"RFC 3339 without fraction", "expires_at = '2026-03-01T11:00:00Z'", time.Time{}, now.Add(-time.Hour), false, ""},
		{"expiry in the future, SQL form", "expires_at = '2026-03-02 12:00:00'", time.Time{}, now.Add(24 * time.Hour), true, ""},
		{"revoked_at not a time", "revoked_at = 'yes'", time.Unix(0, 0), time.Time{}, false, `revoked_at="yes"`},
		{"expires_at not a time", "expires_at = 'tomorrow'", time.Time{}, time.Unix(0, 0), false, `expires_at="tomorrow"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key, k, err := db.CreateAPIKey(ctx, "demo-agent", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.db.ExecContext(ctx, `UPDATE api_keys SET `+tt.set+` WHERE id = ?`, k.ID); err != nil {
				t.Fatal(err)
			}
			got, err := db.VerifyAPIKey(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if got.Active(now) != tt.active || strings.Join(got.Unreadable, " ") != tt.unreadable {
				t.Fatalf("%s: active %v, unreadable %q; want %v, %q (revoked %v, expires %v)", tt.set, got.Active(now), got.Unreadable, tt.active, tt.unreadable, got.RevokedAt, got.ExpiresAt)
			}
			if tt.name == "CURRENT_TIMESTAMP" { // the real clock: only that it is set
				if got.RevokedAt.IsZero() {
					t.Fatalf("revoked_at = CURRENT_TIMESTAMP read as not revoked")
				}
				return
			}
			if !got.RevokedAt.Equal(tt.revoked) || !got.ExpiresAt.Equal(tt.expires) {
				t.Fatalf("%s: revoked %v, expires %v; want %v, %v", tt.set, got.RevokedAt, got.ExpiresAt, tt.revoked, tt.expires)
			}
		})
	}
}

// TestAPIKeyAudit: creating and revoking a key are audit records, written
// with the change, naming the key's id, agent and expiry and never its
// secret; revoking a revoked key changes nothing and records nothing. The
// chain verifies, and the agent's own lineage (what it asked for) is left
// alone: it did neither.
func TestAPIKeyAudit(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	key, k, err := db.CreateAPIKey(ctx, "demo-agent", now.Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := SplitAPIKey(key)
	for range 2 {
		if _, err := db.RevokeAPIKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.RevokeAPIKey(ctx, "000000000000"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("revoke unknown: %v", err)
	}
	var got []string
	if err := db.Records(ctx, Filter{}, func(r *Record) error {
		b, _ := r.MarshalJSON()
		if strings.Contains(string(b), secret) || strings.Contains(string(b), secret[:16]) {
			t.Fatalf("record holds the secret: %s", b)
		}
		got = append(got, r.Agent+" "+r.Tool+" "+string(r.Args)+" "+r.Phase+" "+r.Outcome)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	args := `{"agent":"demo-agent","expires_at":"2026-05-30T12:00:00Z","key_id":"` + k.ID + `"}`
	want := []string{
		"mandate agent_key_create " + args + " attempt executed",
		"mandate agent_key_revoke " + args + " attempt executed",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := db.Lineage(ctx, LineageFilter{Agent: "demo-agent"}, func(*Record) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("demo-agent's lineage: %d records, %v; want none", n, err)
	}
}
