package storage

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

var approvalT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixedClock is a settable clock for DB.Now.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fixedClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func openClocked(t *testing.T, path string, c *fixedClock) *DB {
	t.Helper()
	db := openPath(t, path)
	db.Now = c.Now
	return db
}

// addPending records a pending refund by demo-agent that expires after ttl.
func addPending(t *testing.T, db *DB, id string, ttl time.Duration) *Action {
	t.Helper()
	a := &Action{
		ID: id, Agent: "demo-agent", Tool: "refund_order",
		Args:     json.RawMessage(`{"amount":"150.00","order_id":"ord_1002","reason":"late"}`),
		Decision: "require_approval", Rule: "policy.csv:20: p, support_agent, refund_order, amount > 50.00, require_approval",
		Status: StatusPending, ExpiresAt: db.Now().Add(ttl),
	}
	rec := &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: a.Decision, Rule: a.Rule, Outcome: StatusPending}
	if err := db.RecordAttempt(context.Background(), a, rec); err != nil {
		t.Fatal(err)
	}
	return a
}

func actionRecords(t *testing.T, db *DB, id string) []*Record {
	t.Helper()
	var out []*Record
	if err := db.Records(context.Background(), Filter{ActionID: id}, func(r *Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func status(t *testing.T, db *DB, id string) string {
	t.Helper()
	a, err := db.Action(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Status
}

func TestDecide(t *testing.T) {
	ctx := context.Background()
	approve := Review{Approver: "alice", Approve: true, Comment: "ok", Decision: "allow", Rule: "approve rule"}
	deny := Review{Approver: "bob", Comment: "customer already compensated", Decision: "allow", Rule: "approve rule"}
	tests := []struct {
		name       string
		review     Review
		before     func(db *DB, c *fixedClock, id string) // what happened first
		wantErr    string                                 // error code, "" for success
		wantStatus string
		wantPhases []string // the action's audit phases and outcomes after
	}{
		{name: "approve", review: approve, wantStatus: StatusApproved,
			wantPhases: []string{"attempt/pending", "approval/approved"}},
		{name: "deny with comment", review: deny, wantStatus: StatusDenied,
			wantPhases: []string{"attempt/pending", "approval/denied"}},
		// The requester trying is a security event: refused and recorded.
		{name: "requester cannot approve", review: Review{Approver: "demo-agent", Approve: true},
			wantErr: mandate.EDENIED, wantStatus: StatusPending, wantPhases: []string{"attempt/pending", "approval/refused"}},
		{name: "no approver", review: Review{Approve: true},
			wantErr: mandate.EDENIED, wantStatus: StatusPending, wantPhases: []string{"attempt/pending"}},
		{name: "already decided", review: approve,
			before: func(db *DB, _ *fixedClock, id string) {
				if _, err := db.Decide(ctx, id, deny, nil); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: mandate.ECONFLICT, wantStatus: StatusDenied, wantPhases: []string{"attempt/pending", "approval/denied"}},
		{name: "expired", review: approve,
			before:  func(_ *DB, c *fixedClock, _ string) { c.Set(approvalT0.Add(time.Hour)) },
			wantErr: mandate.ECONFLICT, wantStatus: StatusExpired, wantPhases: []string{"attempt/pending", "approval/expired"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fixedClock{t: approvalT0}
			db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
			a := addPending(t, db, "act_1", time.Hour)
			if tt.before != nil {
				tt.before(db, c, a.ID)
			}
			got, err := db.Decide(ctx, a.ID, tt.review, nil)
			if code := mandate.ErrorCode(err); code != tt.wantErr {
				t.Fatalf("Decide error = %v, want code %q", err, tt.wantErr)
			}
			if err == nil && got.Status != tt.wantStatus {
				t.Fatalf("returned status = %q, want %q", got.Status, tt.wantStatus)
			}
			if s := status(t, db, a.ID); s != tt.wantStatus {
				t.Fatalf("stored status = %q, want %q", s, tt.wantStatus)
			}
			recs := actionRecords(t, db, a.ID)
			var phases []string
			for _, r := range recs {
				phases = append(phases, r.Phase+"/"+r.Outcome)
			}
			if len(phases) != len(tt.wantPhases) {
				t.Fatalf("records = %v, want %v", phases, tt.wantPhases)
			}
			for i := range phases {
				if phases[i] != tt.wantPhases[i] {
					t.Fatalf("records = %v, want %v", phases, tt.wantPhases)
				}
			}
			if err == nil {
				last := recs[len(recs)-1]
				// The comment has its own field, never error.
				if last.Agent != tt.review.Approver || last.Approver != tt.review.Approver || last.Comment != tt.review.Comment ||
					last.Error != "" || last.Rule != tt.review.Rule {
					t.Fatalf("approval record agent=%q approver=%q comment=%q error=%q rule=%q, want %q %q %q \"\" %q",
						last.Agent, last.Approver, last.Comment, last.Error, last.Rule, tt.review.Approver, tt.review.Approver, tt.review.Comment, tt.review.Rule)
				}
				ap, err := db.Approval(ctx, a.ID)
				if err != nil {
					t.Fatal(err)
				}
				if ap.Approver != tt.review.Approver || ap.Comment != tt.review.Comment || !ap.DecidedAt.Equal(approvalT0) {
					t.Fatalf("Approval = %+v, want %s %q at %v", ap, tt.review.Approver, tt.review.Comment, approvalT0)
				}
			}
		})
	}
}

func TestDecideUnknownAction(t *testing.T) {
	db := openTest(t)
	_, err := db.Decide(context.Background(), "act_nope", Review{Approver: "alice", Approve: true}, nil)
	if code := mandate.ErrorCode(err); code != mandate.ENOTFOUND {
		t.Fatalf("error = %v, want not_found", err)
	}
}

func TestClaimApproved(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	a := addPending(t, db, "act_1", time.Hour)
	if _, err := db.ClaimApproved(ctx, a.ID); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("claiming a pending action: %v, want conflict", err)
	}
	if _, err := db.Decide(ctx, a.ID, Review{Approver: "alice", Approve: true}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := db.ClaimApproved(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusExecuting || status(t, db, a.ID) != StatusExecuting {
		t.Fatalf("after claim: returned %q, stored %q, want executing", got.Status, status(t, db, a.ID))
	}
	if _, err := db.ClaimApproved(ctx, a.ID); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("second claim: %v, want conflict", err)
	}
}

func TestExpirePending(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	soon := addPending(t, db, "act_soon", time.Minute)
	later := addPending(t, db, "act_later", time.Hour)
	decided := addPending(t, db, "act_decided", time.Minute)
	if _, err := db.Decide(ctx, decided.ID, Review{Approver: "alice", Comment: "no"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		at   time.Time
		want int
	}{{approvalT0, 0}, {approvalT0.Add(time.Minute), 1}, {approvalT0.Add(2 * time.Minute), 0}} {
		n, err := db.ExpirePending(ctx, step.at)
		if err != nil {
			t.Fatal(err)
		}
		if n != step.want {
			t.Fatalf("ExpirePending(%v) = %d, want %d", step.at, n, step.want)
		}
	}
	for id, want := range map[string]string{soon.ID: StatusExpired, later.ID: StatusPending, decided.ID: StatusDenied} {
		if got := status(t, db, id); got != want {
			t.Fatalf("%s status = %q, want %q", id, got, want)
		}
	}
	recs := actionRecords(t, db, soon.ID)
	if last := recs[len(recs)-1]; last.Phase != PhaseApproval || last.Outcome != StatusExpired || last.Agent != ExpiryAgent {
		t.Fatalf("expiry record = %s/%s by %s", last.Phase, last.Outcome, last.Agent)
	}
}

func TestActionsFilter(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	for i, id := range []string{"act_a", "act_b", "act_c"} {
		c.Set(approvalT0.Add(time.Duration(i) * time.Second))
		addPending(t, db, id, time.Hour)
	}
	if _, err := db.Decide(ctx, "act_b", Review{Approver: "alice", Comment: "no"}, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		status string
		want   []string
	}{
		{"", []string{"act_c", "act_b", "act_a"}},
		{StatusPending, []string{"act_c", "act_a"}},
		{StatusDenied, []string{"act_b"}},
		{StatusExecuted, nil},
	}
	for _, tt := range tests {
		t.Run("status="+tt.status, func(t *testing.T) {
			got, err := db.Actions(ctx, ActionFilter{Status: tt.status})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range got {
				ids = append(ids, a.ID)
			}
			if len(ids) != len(tt.want) {
				t.Fatalf("Actions = %v, want %v", ids, tt.want)
			}
			for i := range ids {
				if ids[i] != tt.want[i] {
					t.Fatalf("Actions = %v, want %v", ids, tt.want)
				}
			}
		})
	}
}

// TestDecideRaces runs approvers against each other and against expiry on
// two handles on one file, as two processes would: exactly one decision
// wins each time, and only an approved action can be claimed, once.
func TestDecideRaces(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	c := &fixedClock{t: approvalT0}
	h1, h2 := openClocked(t, path, c), openClocked(t, path, c)
	for round := 0; round < 6; round++ {
		id := "act_race_" + string(rune('a'+round))
		addPending(t, h1, id, time.Second)
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, expired, claims := 0, 0, 0
		for i, h := range []*DB{h1, h2, h1, h2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i == 3 && round%2 == 1 {
					// Odd rounds: one contender is the expiry sweep, at a
					// time after the deadline.
					n, err := h.ExpirePending(ctx, approvalT0.Add(time.Hour))
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					expired += n
					mu.Unlock()
					return
				}
				if _, err := h.Decide(ctx, id, Review{Approver: []string{"alice", "bob"}[i%2], Approve: true}, nil); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if mandate.ErrorCode(err) != mandate.ECONFLICT {
					t.Errorf("Decide: %v", err)
				}
				if _, err := h.ClaimApproved(ctx, id); err == nil {
					mu.Lock()
					claims++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins+expired != 1 {
			t.Fatalf("round %d: %d approvals and %d expiries won, want exactly one in all", round, wins, expired)
		}
		if claims != wins {
			t.Fatalf("round %d: %d claims for %d approvals", round, claims, wins)
		}
		decisions := 0
		for _, r := range actionRecords(t, h2, id) {
			if r.Phase == PhaseApproval {
				decisions++
			}
		}
		if decisions != 1 {
			t.Fatalf("round %d: %d approval records, want 1", round, decisions)
		}
	}
}

func TestUsersAndSessions(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	if err := db.AddUser(ctx, "alice", "$2a$hash"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, hash, code string }{
		{"alice", "$2a$other", mandate.ECONFLICT},
		{"", "$2a$x", mandate.EINVALID},
		{"al ice", "$2a$x", mandate.EINVALID},
		{"carol", "", mandate.EINVALID},
	} {
		if err := db.AddUser(ctx, tt.name, tt.hash); mandate.ErrorCode(err) != tt.code {
			t.Fatalf("AddUser(%q) = %v, want %s", tt.name, err, tt.code)
		}
	}
	u, err := db.User(ctx, "alice")
	if err != nil || u.PasswordHash != "$2a$hash" {
		t.Fatalf("User(alice) = %+v, %v", u, err)
	}
	if _, err := db.User(ctx, "carol"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("User(carol) = %v, want not_found", err)
	}

	token, s, err := db.CreateSession(ctx, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) != 64 || len(s.CSRF) != 64 || token == s.CSRF {
		t.Fatalf("token %q and csrf %q: want two different 32-byte hex tokens", token, s.CSRF)
	}
	got, err := db.Session(ctx, token)
	if err != nil || got.User != "alice" || got.CSRF != s.CSRF {
		t.Fatalf("Session = %+v, %v", got, err)
	}
	var stored int
	if err := db.db.QueryRow(`SELECT COUNT(*) FROM sessions WHERE token_hash = ?`, token).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("the raw token is stored (%d rows, %v); only its hash may be", stored, err)
	}
	if _, err := db.Session(ctx, "not-a-token"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("Session(bad) = %v, want not_found", err)
	}
	c.Set(approvalT0.Add(time.Hour))
	if _, err := db.Session(ctx, token); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("expired session = %v, want not_found", err)
	}
	c.Set(approvalT0)
	if err := db.DeleteSession(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Session(ctx, token); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("deleted session = %v, want not_found", err)
	}
}

// TestDecideCheck: the check sees the usage counted inside the decision's
// transaction and may turn an approval into a denial, or refuse, leaving
// the action pending.
func TestDecideCheck(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		check      func(*Action, Usage) (Review, error)
		wantErr    string
		wantStatus string
	}{
		{name: "check keeps the approval", wantStatus: StatusApproved,
			check: func(_ *Action, u Usage) (Review, error) {
				return Review{Approve: u.AgentRefunds24h == 1, Comment: "counted"}, nil
			}},
		{name: "check turns it into a denial", wantStatus: StatusDenied,
			check: func(_ *Action, u Usage) (Review, error) {
				return Review{Approve: u.AgentRefundedMinor24h < 1000, Comment: "over the limit now"}, nil
			}},
		{name: "check refuses", wantErr: mandate.EDENIED, wantStatus: StatusPending,
			check: func(*Action, Usage) (Review, error) {
				return Review{}, mandate.Errorf(mandate.EDENIED, "not this approver")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fixedClock{t: approvalT0}
			db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
			// An allowed refund of 20.00 USD by the same agent counts.
			done := &Action{ID: "act_done", Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`),
				Decision: "allow", Status: StatusExecuting, Currency: "USD", AmountMinor: 2000}
			if err := db.RecordAttempt(ctx, done, &Record{Agent: "demo-agent", Tool: "refund_order"}); err != nil {
				t.Fatal(err)
			}
			a := addPending(t, db, "act_1", time.Hour)
			setAmount(t, db, a.ID)
			got, err := db.Decide(ctx, a.ID, Review{Approver: "alice", Approve: true}, tt.check)
			if code := mandate.ErrorCode(err); code != tt.wantErr {
				t.Fatalf("error = %v, want code %q", err, tt.wantErr)
			}
			if err == nil && got.Status != tt.wantStatus {
				t.Fatalf("returned status %q, want %q", got.Status, tt.wantStatus)
			}
			if s := status(t, db, a.ID); s != tt.wantStatus {
				t.Fatalf("stored status %q, want %q", s, tt.wantStatus)
			}
			if ap, _ := db.Approval(ctx, a.ID); err == nil && ap.Approver != "alice" {
				t.Fatalf("approver = %q, want alice (the check cannot change who decided)", ap.Approver)
			}
		})
	}
}

func setAmount(t *testing.T, db *DB, id string) {
	t.Helper()
	if _, err := db.db.Exec(`UPDATE actions SET currency = 'USD', amount_minor = 15000 WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
}

// TestApprovalDebitsLimits: an approved refund counts against the agent's
// limits from the moment it is approved, and a denied one never does.
func TestApprovalDebitsLimits(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	for _, id := range []string{"act_1", "act_2", "act_3"} {
		addPending(t, db, id, time.Hour)
		setAmount(t, db, id)
	}
	var seen []int64
	check := func(approve bool) func(*Action, Usage) (Review, error) {
		return func(_ *Action, u Usage) (Review, error) {
			seen = append(seen, u.AgentRefundedMinor24h)
			return Review{Approve: approve, Comment: "x"}, nil
		}
	}
	for _, step := range []struct {
		id      string
		approve bool
	}{{"act_1", false}, {"act_2", true}, {"act_3", true}} {
		if _, err := db.Decide(ctx, step.id, Review{Approver: "alice"}, check(step.approve)); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int64{0, 0, 15000}; len(seen) != 3 || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Fatalf("usage seen by each decision = %v, want %v", seen, want)
	}
}
