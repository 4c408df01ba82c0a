package storage

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestLoginFailuresAcrossProcesses counts failed logins from two database
// handles on one file at once, as two admin processes would: every failure
// is counted (the read-modify-write is one transaction, not a Go mutex),
// and each has its audit record.
func TestLoginFailuresAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	var dbs []*DB
	for i := 0; i < 2; i++ {
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var latest time.Time
	const each = 20
	for _, db := range dbs {
		wg.Add(1)
		go func(db *DB) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				until, err := db.RecordLoginFailure(ctx, now, LoginFailure{
					User: "alice", Address: "192.0.2.1", Keys: []string{"user:alice"},
					Delay:  func(_ string, n int) time.Duration { return time.Duration(n) * time.Second },
					Forget: time.Hour,
					Audit:  &Record{Agent: "alice", Tool: "admin_login", Decision: "deny", Phase: "attempt", Outcome: "refused"},
				})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if until.After(latest) {
					latest = until
				}
				mu.Unlock()
			}
		}(db)
	}
	wg.Wait()
	// The last failure was the 40th, so it blocks for 40 s.
	if want := now.Add(2 * each * time.Second); !latest.Equal(want) {
		t.Fatalf("blocked until %v, want %v: failures were lost", latest, want)
	}
	until, err := dbs[1].LoginBlockedUntil(ctx, now, "user:alice", "addr:192.0.2.1")
	if err != nil || !until.Equal(latest) {
		t.Fatalf("LoginBlockedUntil = %v, %v; want %v", until, err, latest)
	}
	if until, _ := dbs[0].LoginBlockedUntil(ctx, latest, "user:alice"); !until.IsZero() {
		t.Fatalf("still blocked at the end of the block: %v", until)
	}
	counts, err := dbs[0].LoginFailuresSince(ctx, now.Add(-time.Minute))
	if err != nil || counts["alice"] != 2*each {
		t.Fatalf("failures %v, %v; want alice: %d", counts, err, 2*each)
	}
	n := 0
	if err := dbs[0].Records(ctx, Filter{Tool: "admin_login"}, func(*Record) error { n++; return nil }); err != nil || n != 2*each {
		t.Fatalf("%d audit records (%v), want %d", n, err, 2*each)
	}
	if _, err := dbs[0].Verify(ctx); err != nil {
		t.Fatalf("chain after login failures: %v", err)
	}
	// A failure long after the last is counted from one again.
	later := now.Add(2 * time.Hour)
	until, err = dbs[0].RecordLoginFailure(ctx, later, LoginFailure{User: "alice", Keys: []string{"user:alice"},
		Delay: func(_ string, n int) time.Duration { return time.Duration(n) * time.Second }, Forget: time.Hour})
	if err != nil || !until.Equal(later.Add(time.Second)) {
		t.Fatalf("after the forget window: blocked until %v (%v), want one second", until, err)
	}
	if err := dbs[0].ClearLoginFailures(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	if until, _ := dbs[0].LoginBlockedUntil(ctx, later, "user:alice"); !until.IsZero() {
		t.Fatalf("blocked after a success cleared it: %v", until)
	}
}

func TestSessionLimits(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	if err := db.AddUser(ctx, "alice", "$2a$hash"); err != nil {
		t.Fatal(err)
	}
	old, _, err := db.CreateSession(ctx, "alice", 8*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := db.CreateSession(ctx, "alice", 8*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ActiveSession(ctx, old, 30*time.Minute); err == nil {
		t.Fatal("a new login left the older session alive")
	}
	now = now.Add(29 * time.Minute)
	if _, err := db.ActiveSession(ctx, tok, 30*time.Minute); err != nil {
		t.Fatalf("used after 29 min: %v", err)
	}
	now = now.Add(29 * time.Minute) // 29 min after the last use, 58 after sign-in
	if _, err := db.ActiveSession(ctx, tok, 30*time.Minute); err != nil {
		t.Fatalf("used again 29 min later: %v", err)
	}
	now = now.Add(31 * time.Minute)
	if _, err := db.ActiveSession(ctx, tok, 30*time.Minute); err == nil {
		t.Fatal("a session idle for 31 min is alive")
	}
	if ss, err := db.UserSessions(ctx, "alice"); err != nil || len(ss) != 0 {
		t.Fatalf("sessions after the idle timeout: %v, %v", ss, err)
	}
}

// TestSetPasswordEndsToken: a CLI approver token minted with a password
// stops working when the password is changed, as the sessions do; whoever
// stole the old password must not keep approving with its token.
func TestSetPasswordEndsToken(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "mandate.db"))
	const tok = "tok-before-0123456789abcdef0123456789abcdef"
	if err := db.AddUser(ctx, "alice", "$2a$hash"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetToken(ctx, "alice", tok); err != nil {
		t.Fatal(err)
	}
	if u, err := db.TokenUser(ctx, tok); err != nil || u != "alice" {
		t.Fatalf("TokenUser before = %q, %v; want alice", u, err)
	}
	if err := db.SetPassword(ctx, "alice", "$2a$other"); err != nil {
		t.Fatal(err)
	}
	if u, err := db.TokenUser(ctx, tok); err == nil {
		t.Fatalf("the old token still signs in as %q after a password change", u)
	}
}

// TestUsers: the listing gives each user's name, creation time, whether a
// CLI token is set and their unexpired sessions, by name, and nothing
// secret.
func TestUsers(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	if us, err := db.Users(ctx); err != nil || len(us) != 0 {
		t.Fatalf("Users of a new database = %+v, %v; want none", us, err)
	}
	for _, n := range []string{"carol", "alice", "bob"} {
		if err := db.AddUser(ctx, n, "$2a$hash-of-"+n); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	if err := db.SetToken(ctx, "alice", "tok-alice-0123456789abcdef0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateSession(ctx, "bob", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateSession(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute) // alice's session has expired
	us, err := db.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	want := []UserInfo{
		{Name: "alice", CreatedAt: start.Add(time.Minute), Token: true, TokenCreatedAt: start.Add(3 * time.Minute)},
		{Name: "bob", CreatedAt: start.Add(2 * time.Minute), Sessions: 1},
		{Name: "carol", CreatedAt: start},
	}
	if len(us) != len(want) {
		t.Fatalf("Users = %+v, want %+v", us, want)
	}
	for i := range want {
		if got := us[i]; got.Name != want[i].Name || !got.CreatedAt.Equal(want[i].CreatedAt) || got.Token != want[i].Token ||
			!got.TokenCreatedAt.Equal(want[i].TokenCreatedAt) || got.Sessions != want[i].Sessions {
			t.Errorf("Users[%d] = %+v, want %+v", i, got, want[i])
		}
	}
}
