package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// readAll returns the records f selects, in chain order.
func readAll(t testing.TB, db *DB, f Filter) []*Record {
	t.Helper()
	var out []*Record
	if err := db.Records(context.Background(), f, func(r *Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatalf("Records(%+v): %v", f, err)
	}
	return out
}

// sameRecord fails t unless got holds every field of want.
func sameRecord(t *testing.T, got, want *Record) {
	t.Helper()
	if got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Agent != want.Agent || got.Tool != want.Tool ||
		!bytes.Equal(got.Args, want.Args) || !bytes.Equal(got.Attrs, want.Attrs) ||
		got.Decision != want.Decision || got.Rule != want.Rule || got.PolicyVersion != want.PolicyVersion ||
		got.ActionID != want.ActionID || got.Phase != want.Phase || got.Outcome != want.Outcome ||
		got.Error != want.Error || got.Duration != want.Duration || got.PrevHash != want.PrevHash || got.Hash != want.Hash {
		t.Fatalf("record read back differs:\n got %+v\n     args %s attrs %s\nwant %+v\n     args %s attrs %s",
			*got, got.Args, got.Attrs, *want, want.Args, want.Attrs)
	}
}

func TestActionRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	// A clock in another zone with nanoseconds: times must come back as the
	// same instant.
	clock := &stepClock{t: time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.FixedZone("CET", 3600)), step: 1500 * time.Millisecond}
	db.Now = clock.Now

	// Canonical JSON, non-ASCII and escapes included, must be stored byte for byte.
	args := []byte(`{"amount":"30.00","currency":"USD","note":"caf\u00e9 \"ok\" ✓","order_id":"ord_1001"}`)
	attrs := []byte(`{"order":{"customer_id":"cus_ada","status":"processing","total":"120.00"}}`)
	expires := time.Date(2025, 3, 15, 9, 0, 0, 0, time.UTC)
	a := &Action{
		ID: "act_01", Agent: "demo-agent", Tool: "refund_order", Args: args,
		Decision: "allow", Rule: "policy.csv:24", PolicyVersion: "sha256:abc123",
		Status: StatusExecuting, ExpiresAt: expires, IdempotencyKey: "key-1",
	}
	attempt := &Record{
		Agent: "demo-agent", Tool: "refund_order", Args: args, Attrs: attrs,
		Decision: "allow", Rule: "policy.csv:24", PolicyVersion: "sha256:abc123",
		Duration: 1234567 * time.Nanosecond, // 1234.567 µs: stored as 1234 µs
	}
	attemptAt := clock.t
	if err := db.RecordAttempt(ctx, a, attempt); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(args)
	if a.ArgsDigest != hex.EncodeToString(sum[:]) {
		t.Fatalf("ArgsDigest = %s, want the SHA-256 of the arguments", a.ArgsDigest)
	}
	if attempt.Seq != 1 || attempt.ActionID != a.ID || attempt.Phase != PhaseAttempt || !attempt.Time.Equal(attemptAt) {
		t.Fatalf("attempt record after RecordAttempt: seq %d action %q phase %q time %v", attempt.Seq, attempt.ActionID, attempt.Phase, attempt.Time)
	}

	got, err := db.Action(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ID", got.ID, a.ID},
		{"Agent", got.Agent, "demo-agent"},
		{"Tool", got.Tool, "refund_order"},
		{"Args", string(got.Args), string(args)},
		{"ArgsDigest", got.ArgsDigest, a.ArgsDigest},
		{"Decision", got.Decision, "allow"},
		{"Rule", got.Rule, "policy.csv:24"},
		{"PolicyVersion", got.PolicyVersion, "sha256:abc123"},
		{"Status", got.Status, StatusExecuting},
		{"Result", string(got.Result), ""},
		{"Error", got.Error, ""},
		{"CreatedAt", got.CreatedAt.Equal(attemptAt), true},
		{"UpdatedAt", got.UpdatedAt.Equal(attemptAt), true},
		{"ExpiresAt", got.ExpiresAt.Equal(expires), true},
		{"IdempotencyKey", got.IdempotencyKey, "key-1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("after attempt, %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	a.Status, a.Result, a.Error = StatusFailed, []byte(`{"refund_id":"re_1","amount":"30.00"}`), "the backend timed out"
	outcome := &Record{
		Agent: "demo-agent", Tool: "refund_order", Args: args, Attrs: attrs,
		Decision: "allow", Rule: "policy.csv:24", PolicyVersion: "sha256:abc123",
		Outcome: StatusFailed, Error: "the backend timed out", Duration: 2 * time.Second,
	}
	outcomeAt := clock.t
	if err := db.RecordOutcome(ctx, a, outcome); err != nil {
		t.Fatal(err)
	}
	got, err = db.Action(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	checks = []struct {
		name      string
		got, want any
	}{
		{"Status", got.Status, StatusFailed},
		{"Result", string(got.Result), `{"refund_id":"re_1","amount":"30.00"}`},
		{"Error", got.Error, "the backend timed out"},
		{"CreatedAt", got.CreatedAt.Equal(attemptAt), true},
		{"UpdatedAt", got.UpdatedAt.Equal(outcomeAt), true},
		{"Args", string(got.Args), string(args)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("after outcome, %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	recs := readAll(t, db, Filter{ActionID: a.ID})
	if len(recs) != 2 {
		t.Fatalf("%d records for %s, want attempt and outcome", len(recs), a.ID)
	}
	wantAttempt := *attempt
	wantAttempt.Duration = 1234 * time.Microsecond
	sameRecord(t, recs[0], &wantAttempt)
	sameRecord(t, recs[1], outcome)
	if recs[1].Phase != PhaseOutcome || recs[1].Outcome != StatusFailed || !recs[1].Time.Equal(outcomeAt) {
		t.Fatalf("outcome record: phase %q outcome %q time %v", recs[1].Phase, recs[1].Outcome, recs[1].Time)
	}

	var us int64
	if err := db.db.QueryRow(`SELECT duration_us FROM audit WHERE seq = 1`).Scan(&us); err != nil {
		t.Fatal(err)
	}
	if us != 1234 {
		t.Fatalf("stored duration_us = %d, want 1234", us)
	}
}

func TestRecordAttemptDefaults(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }

	a := &Action{ID: "act_1", Agent: "demo-agent", Tool: "cancel_order", Args: []byte(`{"order_id":"ord_1004"}`), Status: StatusExecuting}
	rec := &Record{Agent: "demo-agent", Tool: "cancel_order", Args: a.Args}
	if err := db.RecordAttempt(ctx, a, rec); err != nil {
		t.Fatal(err)
	}
	got, err := db.Action(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.ExpiresAt.Equal(now) {
		t.Fatalf("ExpiresAt = %v, want the attempt time %v when none is given", got.ExpiresAt, now)
	}
	// No attrs: stored, hashed and read back as an empty object.
	recs := readAll(t, db, Filter{})
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if string(recs[0].Attrs) != "{}" {
		t.Fatalf("attrs = %q, want {} when none are given", recs[0].Attrs)
	}
}

func TestRecordAttemptDuplicateWritesNothing(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	newAttempt := func() (*Action, *Record) {
		return &Action{ID: "act_1", Agent: "demo-agent", Tool: "refund_order", Args: []byte(`{}`), Status: StatusExecuting},
			&Record{Agent: "demo-agent", Tool: "refund_order"}
	}
	a, rec := newAttempt()
	if err := db.RecordAttempt(ctx, a, rec); err != nil {
		t.Fatal(err)
	}
	a, rec = newAttempt()
	if err := db.RecordAttempt(ctx, a, rec); err == nil {
		t.Fatal("a second attempt with the same action id succeeded")
	}
	// The action row and its audit record are one transaction: the refused
	// attempt left no audit record behind.
	if n := countRows(t, db, "audit"); n != 1 {
		t.Fatalf("%d audit records, want 1", n)
	}
}

func TestActionNotFound(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if err := db.RecordAttempt(ctx, &Action{ID: "act_known", Args: []byte(`{}`), Status: StatusExecuting}, &Record{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"act_unknown", "", "ACT_KNOWN", "act_known "} {
		t.Run(id, func(t *testing.T) {
			a, err := db.Action(ctx, id)
			if a != nil {
				t.Fatalf("Action(%q) = %+v, want nil", id, a)
			}
			if got := mandate.ErrorCode(err); got != mandate.ENOTFOUND {
				t.Fatalf("Action(%q): ErrorCode = %q, want %q (err: %v)", id, got, mandate.ENOTFOUND, err)
			}
		})
	}
}

// TestFreeTextWithNUL: free text from outside can hold NUL (a backend's
// problem detail is JSON, where "\u0000" decodes to it; so can a person's
// comment or reason). PostgreSQL's text cannot store NUL, so both engines
// store U+FFFD in its place, in the rows and in the records before they are
// hashed: a failed outcome is recorded (and gives the limits back), an
// approval and a suspension go through, and the trail verifies.
func TestFreeTextWithNUL(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	const nul, want = "card declined\x00 by issuer", "card declined\uFFFD by issuer"
	a := &Action{ID: "act_nul", Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`),
		Decision: "allow", Status: StatusExecuting, CustomerID: "cus_1", AmountMinor: 1000, Currency: "USD"}
	if err := db.RecordAttempt(ctx, a, &Record{Agent: "demo-agent", Tool: "refund_order", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
	// A refusal whose rule quotes a backend's failure (facts could not be
	// loaded: its problem detail), NUL and all (a review of the first fix).
	rule := "default deny: facts could not be loaded: the orders service failed: " + nul
	ra := &Action{ID: "act_rule_nul", Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`)}
	rr := &Record{Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`)}
	if err := db.DecideAndRecord(ctx, ra, rr, func(Usage) {
		ra.Decision, ra.Rule, ra.Status = "deny", rule, StatusDenied
		rr.Decision, rr.Rule, rr.Outcome = "deny", rule, "refused"
	}); err != nil {
		t.Fatalf("a refusal whose rule holds a NUL: %v", err)
	}
	if got, err := db.Action(ctx, "act_rule_nul"); err != nil || strings.Contains(got.Rule, "\x00") || !strings.Contains(got.Rule, want) {
		t.Fatalf("the refusal's rule as stored: %q, %v", got.Rule, err)
	}
	a.Status, a.Error = StatusFailed, nul
	rec := &Record{Agent: "demo-agent", Tool: "refund_order", Decision: "allow", Outcome: StatusFailed, Error: nul, Credential: "jwt:\x00"}
	if err := db.RecordOutcome(ctx, a, rec); err != nil {
		t.Fatalf("RecordOutcome with a NUL in the error: %v", err)
	}
	if got, err := db.Action(ctx, "act_nul"); err != nil || got.Status != StatusFailed || got.Error != want {
		t.Fatalf("action after the outcome = %+v, %v; want failed with error %q", got, err, want)
	}
	if u, err := db.Usage(ctx, &Action{Agent: "demo-agent", Tool: "refund_order", CustomerID: "cus_1", Currency: "USD"}); err != nil || u.AgentRefundedMinor24h != 0 {
		t.Fatalf("refunded in 24 h after the failed outcome = %d, %v; want 0 (given back)", u.AgentRefundedMinor24h, err)
	}
	recs := actionRecords(t, db, "act_nul")
	if out := recs[len(recs)-1]; out.Error != want || out.Credential != "jwt:\uFFFD" {
		t.Fatalf("outcome record error %q, credential %q; want %q, %q", out.Error, out.Credential, want, "jwt:\uFFFD")
	}

	p := addPending(t, db, "act_pending", time.Hour)
	if _, err := db.Decide(ctx, p.ID, Review{Approver: "alice", Comment: "ok\x00", Decision: "allow", Rule: "approve rule"}, nil); err != nil {
		t.Fatalf("Decide with a NUL in the comment: %v", err)
	}
	if ap, err := db.Approval(ctx, p.ID); err != nil || ap.Comment != "ok\uFFFD" {
		t.Fatalf("approval = %+v, %v; want comment %q", ap, err, "ok\uFFFD")
	}

	recordLoad(t, db, "v1", "/p.csv")
	s, err := db.Suspend(ctx, SuspendRequest{Agent: "demo-agent", By: "alice", Reason: "inject\x00ion",
		Held:  PolicyRef{Version: "v1", PolicyFile: "/p.csv"},
		Audit: &Record{Agent: "alice", Tool: "suspend_agent", Args: json.RawMessage(`{}`), Decision: "allow", Phase: PhaseAttempt, Outcome: StatusExecuted, Comment: "inject\x00ion"}})
	if err != nil {
		t.Fatalf("Suspend with a NUL in the reason: %v", err)
	}
	if cur, err := db.ActiveSuspension(ctx, "demo-agent"); err != nil || s.Reason != "inject\uFFFDion" || cur.Reason != s.Reason {
		t.Fatalf("suspension reason %q, stored %+v, %v; want %q", s.Reason, cur, err, "inject\uFFFDion")
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}
