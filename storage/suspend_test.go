package storage

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/mandatehq/mandate"
)

// TestSuspendResume: a suspension is seen by the transaction that decides
// an action (usage), by another process's handle on the same file, and is
// kept in the history after it is lifted; suspending twice with the same
// scope is a conflict, with another scope it replaces the active one.
func TestSuspendResume(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	db := openPath(t, path)
	other := openPath(t, path) // as a second process would
	recordLoad(t, db, "v1", "/p.csv")
	held := PolicyRef{Version: "v1", PolicyFile: "/p.csv"}
	act := &Action{Agent: "demo-agent", Tool: "update_account"}

	u, err := other.Usage(ctx, act)
	if err != nil || u.Suspended != 0 {
		t.Fatalf("before: Suspended = %d, %v; want 0", u.Suspended, err)
	}
	rec := &Record{Agent: "alice", Tool: "suspend_agent", Args: json.RawMessage(`{"agent":"demo-agent"}`), Decision: "allow", Phase: PhaseAttempt, Outcome: StatusExecuted}
	s, err := db.Suspend(ctx, SuspendRequest{Agent: "demo-agent", By: "alice", Reason: "injection", Held: held, Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	if u, err = other.Usage(ctx, act); err != nil || u.Suspended != s.ID {
		t.Fatalf("after suspend: Suspended = %d, %v; want %d", u.Suspended, err, s.ID)
	}
	if u, _ = other.Usage(ctx, &Action{Agent: "senior-bot", Tool: "update_account"}); u.Suspended != 0 {
		t.Fatalf("another agent is suspended too: %d", u.Suspended)
	}
	if _, err := db.Suspend(ctx, SuspendRequest{Agent: "demo-agent", By: "bob", Reason: "again", Held: held}); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatalf("suspending twice: err = %v, want conflict", err)
	}
	narrow, err := db.Suspend(ctx, SuspendRequest{Agent: "demo-agent", By: "bob", Reason: "lookups are fine", ActionsOnly: true, Held: held})
	if err != nil {
		t.Fatal(err)
	}
	if u, _ = other.Usage(ctx, act); u.Suspended != narrow.ID {
		t.Fatalf("after narrowing: Suspended = %d, want %d (no gap between the two)", u.Suspended, narrow.ID)
	}
	active, err := other.ActiveSuspensions(ctx)
	if err != nil || len(active) != 1 || !active[0].ActionsOnly || active[0].SuspendedBy != "bob" {
		t.Fatalf("active = %+v, %v; want bob's actions-only suspension alone", active, err)
	}
	if _, err := db.Resume(ctx, SuspendRequest{Agent: "demo-agent", By: "alice", Held: held}); err != nil {
		t.Fatal(err)
	}
	if u, _ = other.Usage(ctx, act); u.Suspended != 0 {
		t.Fatalf("after resume: Suspended = %d, want 0", u.Suspended)
	}
	if _, err := db.Resume(ctx, SuspendRequest{Agent: "demo-agent", By: "alice", Held: held}); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("resuming an agent that is not suspended: err = %v, want not_found", err)
	}
	hist, err := db.Suspensions(ctx, "demo-agent", 0)
	if err != nil || len(hist) != 2 || hist[0].Active() || hist[1].ResumedBy != "bob" || hist[0].ResumedBy != "alice" {
		t.Fatalf("history = %+v, %v; want both, lifted by bob (replaced) and alice", hist, err)
	}
	var n int
	if err := db.Records(ctx, Filter{Tool: "suspend_agent"}, func(*Record) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("suspend records = %d, %v; want the one given with the request", n, err)
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSuspendRefusesStalePolicy: a suspension decided under a policy that
// is not the live one is refused and nothing is stored.
func TestSuspendRefusesStalePolicy(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	held := PolicyRef{Version: "v1", PolicyFile: "/p.csv"}
	for _, live := range []string{"", "v2"} {
		if live != "" {
			recordLoad(t, db, live, "/q.csv")
		}
		_, err := db.Suspend(ctx, SuspendRequest{Agent: "demo-agent", By: "alice", Reason: "x", Held: held})
		var stale *StalePolicyError
		if !errors.As(err, &stale) {
			t.Fatalf("live %q: err = %v, want a stale policy error", live, err)
		}
	}
	if s, err := db.ActiveSuspension(ctx, "demo-agent"); err != nil || s != nil {
		t.Fatalf("active = %+v, %v; want none", s, err)
	}
}

// TestClaimRevert: the first person to claim a revert holds it, again and
// again (the same claim, so the same revert); another person is told who
// holds it. A released claim is made anew (a new revert) by whoever claims
// next; releasing a claim that is no longer held changes nothing.
func TestClaimRevert(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	first, err := db.ClaimRevert(ctx, "act_1", "alice")
	if err != nil || first.By != "alice" || first.At == "" {
		t.Fatalf("ClaimRevert(act_1, alice) = %+v, %v", first, err)
	}
	for _, by := range []string{"alice", "bob"} {
		if got, err := db.ClaimRevert(ctx, "act_1", by); err != nil || got != first {
			t.Fatalf("ClaimRevert(act_1, %s) = %+v, %v; want alice's %+v", by, got, err, first)
		}
	}
	if got, err := db.ClaimRevert(ctx, "act_2", "bob"); err != nil || got.By != "bob" {
		t.Fatalf("ClaimRevert(act_2, bob) = %+v, %v; want it", got, err)
	}
	if err := db.ReleaseRevert(ctx, "act_1", first); err != nil {
		t.Fatal(err)
	}
	bobs, err := db.ClaimRevert(ctx, "act_1", "bob")
	if err != nil || bobs.By != "bob" || bobs.At == first.At {
		t.Fatalf("after alice released act_1, ClaimRevert(act_1, bob) = %+v, %v; want a new claim by bob", bobs, err)
	}
	if err := db.ReleaseRevert(ctx, "act_1", first); err != nil { // alice's, long gone
		t.Fatal(err)
	}
	if got, err := db.ClaimRevert(ctx, "act_1", "alice"); err != nil || got != bobs {
		t.Fatalf("a stale release took bob's claim: ClaimRevert(act_1, alice) = %+v, %v", got, err)
	}
}
