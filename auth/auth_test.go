package auth

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"golang.org/x/crypto/bcrypt"
)

const goodPassword = "plum-velvet-harbour-42"

// clock is a fixed, movable time for tests: backoff is tested by moving
// it, never by waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func loadPolicy(t *testing.T, extra string) *policy.Policy {
	t.Helper()
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: append(append([]byte{}, mandate.DefaultPolicy...), extra...)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newAuth(t *testing.T) (*Authenticator, *clock, *storage.DB) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	db.Now = clk.Now
	hash, err := bcrypt.GenerateFromPassword([]byte(goodPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "demo-agent"} {
		if err := db.AddUser(ctx, u, string(hash)); err != nil {
			t.Fatal(err)
		}
	}
	a := &Authenticator{DB: db, Policy: policy.NewEngine(loadPolicy(t, "")), Now: clk.Now, dummy: hash}
	return a, clk, db
}

// countAudit counts the audit records of tool.
func countAudit(t *testing.T, db *storage.DB, tool string) (n int, recs []*storage.Record) {
	t.Helper()
	err := db.Records(context.Background(), storage.Filter{Tool: tool}, func(r *storage.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(recs), recs
}

func TestBackoffAfter300WrongPasswords(t *testing.T) {
	a, clk, db := newAuth(t)
	ctx := context.Background()
	var compared atomic.Int64
	a.init()
	a.compare = func(h, p []byte) error { compared.Add(1); return bcrypt.CompareHashAndPassword(h, p) }
	throttled := 0
	for i := 0; i < 300; i++ {
		_, err := a.Password(ctx, "alice", "wrong guess number "+string(rune('a'+i%26)), "203.0.113.7:5555", "web")
		if err == nil {
			t.Fatalf("guess %d accepted", i)
		}
		if _, ok := IsThrottled(err); ok {
			throttled++
		}
	}
	if throttled < 290 {
		t.Fatalf("only %d of 300 guesses were refused by backoff", throttled)
	}
	if c := compared.Load(); c > 5 {
		t.Fatalf("%d passwords were hashed during a backoff; want only the few before it", c)
	}
	// The right password is refused too while the backoff lasts, from
	// this address and from another one (the user's own backoff).
	for _, addr := range []string{"203.0.113.7:5555", "198.51.100.9:1"} {
		if _, err := a.Password(ctx, "alice", goodPassword, addr, "web"); err == nil {
			t.Fatalf("the right password from %s was accepted during the backoff", addr)
		} else if _, ok := IsThrottled(err); !ok {
			t.Fatalf("the right password from %s: %v, want a backoff refusal", addr, err)
		}
	}
	// Another process on the same database sees the same backoff.
	other := &Authenticator{DB: db, Policy: a.Policy, Now: clk.Now, dummy: a.dummy}
	if _, err := other.Password(ctx, "alice", goodPassword, "198.51.100.9:1", "web"); err == nil {
		t.Fatal("a second authenticator on the same database ignored the backoff")
	}
	// The backoff is capped: after MaxDelay the right password works.
	clk.Add(15*time.Minute + time.Second)
	id, err := a.Password(ctx, "alice", goodPassword, "198.51.100.9:1", "web")
	if err != nil || id.Name != "alice" || id.Role != Approver {
		t.Fatalf("after the backoff: %+v, %v", id, err)
	}
	// Each failure that was checked is an audit record, without the password.
	n, recs := countAudit(t, db, LoginTool)
	if n != int(compared.Load())-1 { // the last comparison was the right password
		t.Fatalf("%d audit records for %d checked failures", n, compared.Load())
	}
	for _, r := range recs {
		if r.Agent != "alice" || r.Phase != "attempt" || r.Decision != policy.Deny || r.Outcome != "refused" {
			t.Fatalf("audit record %+v", r)
		}
		if b, _ := r.MarshalJSON(); contains(string(b), "wrong guess") {
			t.Fatalf("the audit record holds the password: %s", b)
		}
	}
	counts, err := db.LoginFailuresSince(ctx, clk.Now().Add(-time.Hour))
	if err != nil || counts["alice"] != n {
		t.Fatalf("recent failures %v, %v; want alice: %d", counts, err, n)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	a := &Authenticator{}
	a.init()
	tests := []struct {
		key  string
		n    int
		want time.Duration
	}{
		{"user:alice", 1, 0},
		{"user:alice", 2, 0},
		{"user:alice", 3, time.Second},
		{"user:alice", 4, 2 * time.Second},
		{"user:alice", 8, 32 * time.Second},
		{"user:alice", 40, 15 * time.Minute},
		{"user:alice", 300, 15 * time.Minute},
		{"addr:192.0.2.1", 9, 0},
		{"addr:192.0.2.1", 10, time.Second},
	}
	for _, tt := range tests {
		if got := a.delay(tt.key, tt.n); got != tt.want {
			t.Fatalf("delay(%s, %d) = %v, want %v", tt.key, tt.n, got, tt.want)
		}
	}
}

func TestPerAddressBackoffCoversManyNames(t *testing.T) {
	a, _, _ := newAuth(t)
	ctx := context.Background()
	var err error
	for i := 0; i < 30; i++ {
		_, err = a.Password(ctx, "nobody"+string(rune('a'+i)), "whatever", "[2001:db8::1]:4000", "web")
	}
	if _, ok := IsThrottled(err); !ok {
		t.Fatalf("30 names from one address: last error %v, want a backoff", err)
	}
	// The same /64 is the same address.
	if _, err := a.Password(ctx, "bob", goodPassword, "[2001:db8::2]:1", "web"); err == nil {
		t.Fatal("another host of the same /64 was not held back")
	}
	if _, err := a.Password(ctx, "bob", goodPassword, "192.0.2.50:1", "web"); err != nil {
		t.Fatalf("bob from an unrelated address: %v", err)
	}
}

func TestHashingConcurrencyCap(t *testing.T) {
	a, _, _ := newAuth(t)
	ctx := context.Background()
	a.MaxHashes, a.HashWait = 2, time.Hour
	a.init()
	var running, peak atomic.Int64
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	a.compare = func(h, p []byte) error {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		entered <- struct{}{}
		<-release
		running.Add(-1)
		return bcrypt.ErrMismatchedHashAndPassword
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a.Password(ctx, "alice", "x", "192.0.2."+string(rune('1'+i))+":1", "web")
		}(i)
	}
	<-entered
	<-entered
	// Two hashes run; the other six wait for a slot. With the slots full,
	// a login that may not wait is refused as busy, not hashed.
	busy := &Authenticator{DB: a.DB, Policy: a.Policy, Now: a.Now, MaxHashes: 2, HashWait: time.Nanosecond, dummy: a.dummy}
	busy.init()
	busy.sem = a.sem
	busy.compare = func(h, p []byte) error { t.Error("hashed while every slot was taken"); return nil }
	if _, err := busy.Password(ctx, "bob", goodPassword, "192.0.2.99:1", "web"); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("login with every slot taken: %v, want unavailable", err)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrent hashes %d, want 2", p)
	}
}

func TestTokenAndRoles(t *testing.T) {
	a, _, db := newAuth(t)
	ctx := context.Background()
	tok := "mdt_0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := db.SetToken(ctx, "bob", tok); err != nil {
		t.Fatal(err)
	}
	if id, err := a.Token(ctx, tok, "cli:ops", "cli"); err != nil || id.Name != "bob" {
		t.Fatalf("token: %+v %v", id, err)
	}
	if _, err := a.Token(ctx, tok+"x", "cli:ops", "cli"); err != ErrBadCredentials {
		t.Fatalf("wrong token: %v", err)
	}
	// An agent with a users row (from before this check existed) and the
	// right password is still refused, and audited.
	if _, err := a.Password(ctx, "demo-agent", goodPassword, "192.0.2.1:1", "web"); mandate.ErrorCode(err) != mandate.EDENIED {
		t.Fatalf("agent login: %v", err)
	}
	// Removing bob's role from the live policy takes it away at once.
	a.Policy.Swap(loadPolicy(t, ""))
	stripped, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: []byte(replace(string(mandate.DefaultPolicy), "g, bob, supervisor\n", ""))})
	if err != nil {
		t.Fatal(err)
	}
	a.Policy.Swap(stripped)
	if _, err := a.Token(ctx, tok, "cli:ops", "cli"); mandate.ErrorCode(err) != mandate.EDENIED {
		t.Fatalf("token of a user without a role: %v", err)
	}
}

// TestRightPasswordWithoutRoleStaysCounted: a right password for a name
// the live policy gives no role (dave lost his g line, his users row stayed)
// costs what a wrong one does: after two wrong guesses, the third blocks the
// fourth whether it was right or wrong, so the backoff is no oracle for the
// passwords of people who lost their role. The refusal is audited.
func TestRightPasswordWithoutRoleStaysCounted(t *testing.T) {
	ctx := context.Background()
	fourth := map[string]error{}
	for _, third := range []string{"wrong guess 3", goodPassword} {
		a, _, db := newAuth(t) // time stands still: no block is waited out
		hash, _ := bcrypt.GenerateFromPassword([]byte(goodPassword), bcrypt.MinCost)
		if err := db.AddUser(ctx, "dave", string(hash)); err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{"wrong guess 1", "wrong guess 2", third} {
			if _, err := a.Password(ctx, "dave", pw, "192.0.2.1:1", "web"); mandate.ErrorCode(err) != mandate.EDENIED {
				t.Fatalf("dave with %q: %v, want denied", pw, err)
			}
		}
		_, fourth[third] = a.Password(ctx, "dave", "wrong guess 4", "192.0.2.1:1", "web")
		if _, ok := IsThrottled(fourth[third]); !ok {
			t.Fatalf("the 4th try after a third that was %q: %v, want it blocked like any after three failures", third, fourth[third])
		}
		if third == goodPassword {
			_, recs := countAudit(t, db, LoginTool)
			if n := len(recs); n != 3 || !contains(recs[2].Error, "dave holds no approver or auditor role") {
				t.Fatalf("%d sign-in records, the last %+v; want two failures and the refusal of dave's role", n, recs[n-1])
			}
		}
	}
}

func replace(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	panic("not found: " + old)
}

func TestCheckUserName(t *testing.T) {
	p := loadPolicy(t, "g, carol, auditor\n")
	tests := []struct {
		name string
		ok   bool
		role Role
	}{
		{"alice", true, Approver},
		{"carol", true, Auditor},
		{"аlice", false, None},       // Cyrillic а
		{"ALICE", false, None},       // confusable with alice, and not an identity
		{"demo-agent", false, None},  // an agent
		{"senior-bot", false, None},  // an agent
		{"<b>x</b>", false, None},    // markup
		{"al\u202eice", false, None}, // bidi control
		{"mallory", false, None},     // not in the policy
		{"supervisor", false, None},  // a role, not an identity
		{"a\u200blice", false, None}, // zero-width space
	}
	for _, tt := range tests {
		err := CheckUserName(p, tt.name)
		if (err == nil) != tt.ok {
			t.Fatalf("CheckUserName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
		if got := RoleOf(p, tt.name); got != tt.role {
			t.Fatalf("RoleOf(%q) = %v, want %v", tt.name, got, tt.role)
		}
	}
}

func TestCheckPassword(t *testing.T) {
	tests := []struct {
		pw string
		ok bool
	}{
		{"aaaaaaaaaa", false},
		{"aaaaaaaaaaaaaaaa", false},
		{"short1!", false},
		{"password1234", false},
		{"PassWordPassword", false},
		{"qwertyuiopasdf", false},
		{"alice-is-great-99", false}, // holds the name
		{"abababababababab", false},
		{goodPassword, true},
		{"correct horse battery", true},
	}
	for _, tt := range tests {
		if err := CheckPassword("alice", tt.pw); (err == nil) != tt.ok {
			t.Fatalf("CheckPassword(%q) = %v, want ok %v", tt.pw, err, tt.ok)
		}
	}
	if n := len(common()); n < 3000 {
		t.Fatalf("the shipped list holds %d passwords, want a few thousand", n)
	}
}

// TestConcurrentGuessesRespectBackoff fires many guesses for one user at
// once, to one process and to two on the same database: the backoff must
// bound how many are hashed as it does for guesses one after another, not
// let through to bcrypt every guess that arrived before the first failure
// was recorded.
func TestConcurrentGuessesRespectBackoff(t *testing.T) {
	for procs, name := range []string{1: "one process", 2: "two processes"} {
		if name == "" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			a, clk, db := newAuth(t)
			ctx := context.Background()
			var compared atomic.Int64
			auths := []*Authenticator{a}
			for len(auths) < procs {
				other, err := storage.Open(ctx, db.Path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { other.Close() })
				auths = append(auths, &Authenticator{DB: other, Policy: a.Policy, Now: clk.Now, dummy: a.dummy})
			}
			for _, a := range auths {
				a.MaxHashes, a.HashWait = 2, 10*time.Second
				a.init()
				a.compare = func(h, p []byte) error {
					compared.Add(1)
					time.Sleep(20 * time.Millisecond)
					return bcrypt.ErrMismatchedHashAndPassword
				}
			}
			var wg sync.WaitGroup
			var throttled, bad atomic.Int64
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func(a *Authenticator) {
					defer wg.Done()
					_, err := a.Password(ctx, "alice", "guess", "203.0.113.7:5555", "web")
					if _, ok := IsThrottled(err); ok {
						throttled.Add(1)
					} else if err == ErrBadCredentials {
						bad.Add(1)
					} else {
						t.Errorf("guess: %v, want a backoff or bad credentials", err)
					}
				}(auths[i%procs])
			}
			wg.Wait()
			if c, most := compared.Load(), int64(freeUserFailures+a.MaxHashes); c > most {
				t.Fatalf("%d of 40 guesses at once were hashed; at most %d may be", c, most)
			}
			// Every guess that was checked is refused and audited.
			if n, _ := countAudit(t, db, LoginTool); int64(n) != bad.Load() || bad.Load() != compared.Load() {
				t.Fatalf("%d audit records, %d refused as bad, %d hashed", n, bad.Load(), compared.Load())
			}
			if throttled.Load()+bad.Load() != 40 {
				t.Fatalf("%d throttled + %d bad of 40", throttled.Load(), bad.Load())
			}
			// Once the backoff is over, the right password works.
			clk.Add(time.Hour)
			a.compare = bcrypt.CompareHashAndPassword
			if id, err := a.Password(ctx, "alice", goodPassword, "203.0.113.7:5555", "web"); err != nil || id.Name != "alice" {
				t.Fatalf("after the backoff: %+v, %v", id, err)
			}
		})
	}
}

// TestHangUpWhileWaitingIsNotCounted: a sign-in whose client hangs up
// while it waits for a hashing slot was never checked, so it does not
// count as a failure; under load, impatient users would otherwise lock
// themselves out.
func TestHangUpWhileWaitingIsNotCounted(t *testing.T) {
	a, clk, db := newAuth(t)
	a.MaxHashes, a.HashWait = 1, 10*time.Second
	a.init()
	release := make(chan struct{})
	a.compare = func(h, p []byte) error {
		<-release
		return bcrypt.ErrMismatchedHashAndPassword
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Password(context.Background(), "alice", "guess", "203.0.113.7:5555", "web")
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // the guess holds the only slot
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := a.Password(ctx, "alice", goodPassword, fmt.Sprintf("198.51.100.%d:5555", i+1), "web")
		cancel()
		if err == nil {
			t.Fatalf("attempt %d signed in while waiting for a slot", i)
		}
	}
	close(release)
	if err := <-done; err != ErrBadCredentials {
		t.Fatalf("the guess: %v", err)
	}
	if until, err := db.LoginBlockedUntil(context.Background(), clk.Now(), UserKey("alice")); err != nil || !until.IsZero() {
		t.Fatalf("one wrong guess and three hang-ups: alice blocked until %v (%v); only the guess counts", until, err)
	}
}
