package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// seedPending records n pending actions through RecordAttempt, from many
// goroutines so the group commit batches them: agent i%len(agents), and
// expiries that do not follow creation order, so the sort is tested.
func seedPending(t *testing.T, db *DB, n int, agents ...string) []*Action {
	t.Helper()
	acts := make([]*Action, n)
	for i := range acts {
		acts[i] = &Action{
			ID: fmt.Sprintf("act_%05d", i), Agent: agents[i%len(agents)], Tool: "refund_order",
			Args:     json.RawMessage(fmt.Sprintf(`{"amount":"60.00","order_id":"ord_%d","reason":"r"}`, i)),
			Decision: "require_approval", Rule: "test", Status: StatusPending,
			ExpiresAt: db.Now().Add(time.Hour + time.Duration((i*7919)%n)*time.Second),
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				a := acts[i]
				if err := db.RecordAttempt(context.Background(), a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Outcome: StatusPending}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return acts
}

func TestPendingPages(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	seedPending(t, db, 1200, "agent-a", "agent-b", "agent-c")
	// One decided action must drop out of the count and the pages.
	if _, err := db.Decide(ctx, "act_00005", Review{Approver: "alice", Comment: "no"}, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		f     PendingFilter
		want  int
		order func(a, b *Action) bool
	}{
		{"all, soonest to expire first", PendingFilter{Limit: 100}, 1199, func(a, b *Action) bool { return a.ExpiresAt.Before(b.ExpiresAt) }},
		{"default page size", PendingFilter{}, 1199, func(a, b *Action) bool { return a.ExpiresAt.Before(b.ExpiresAt) }},
		{"one agent", PendingFilter{Agent: "agent-b", Limit: 77}, 400, func(a, b *Action) bool { return a.ExpiresAt.Before(b.ExpiresAt) }},
		{"newest first", PendingFilter{Order: OrderNewest, Limit: MaxPage}, 1199, func(a, b *Action) bool { return !a.CreatedAt.Before(b.CreatedAt) }},
		{"nobody's", PendingFilter{Agent: "agent-z"}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			var all []*Action
			f := tt.f
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				p, err := db.Pending(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				if p.Total != tt.want {
					t.Fatalf("Total = %d, want %d", p.Total, tt.want)
				}
				size := f.Limit
				if size == 0 {
					size = DefaultPage
				}
				if len(p.Actions) > size || (p.Next != "" && len(p.Actions) != size) {
					t.Fatalf("page of %d actions (limit %d, next %q)", len(p.Actions), size, p.Next)
				}
				if p.Before != len(all) {
					t.Fatalf("Before = %d, want %d", p.Before, len(all))
				}
				for _, a := range p.Actions {
					if seen[a.ID] {
						t.Fatalf("%s shown twice", a.ID)
					}
					if a.Status != StatusPending || (f.Agent != "" && a.Agent != f.Agent) {
						t.Fatalf("%s is %s by %s", a.ID, a.Status, a.Agent)
					}
					seen[a.ID] = true
				}
				all = append(all, p.Actions...)
				if p.Next == "" {
					break
				}
				f.After = p.Next
			}
			if len(all) != tt.want {
				t.Fatalf("reached %d actions by paging, want %d", len(all), tt.want)
			}
			if tt.order != nil && !sort.SliceIsSorted(all, func(i, j int) bool { return tt.order(all[i], all[j]) }) {
				t.Fatalf("pages are not in order: first %s (expires %s), last %s", all[0].ID, all[0].ExpiresAt, all[len(all)-1].ID)
			}
		})
	}
	counts, err := db.PendingAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(counts) != "[{agent-a 400} {agent-b 400} {agent-c 399}]" {
		t.Fatalf("PendingAgents = %v", counts)
	}
}

func TestPendingBadFilter(t *testing.T) {
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	for _, f := range []PendingFilter{{Limit: MaxPage + 1}, {Limit: -1}, {Order: "random"}, {After: "act_missing"}} {
		if _, err := db.Pending(context.Background(), f); mandate.ErrorCode(err) != mandate.EINVALID {
			t.Fatalf("Pending(%+v) = %v, want an invalid error", f, err)
		}
	}
}

// TestAgentPendingCounted checks what DecideAndRecord tells decide: the
// agent's own pending actions that have not expired, no one else's.
func TestAgentPendingCounted(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	addPending(t, db, "act_live1", time.Hour)
	addPending(t, db, "act_live2", time.Hour)
	addPending(t, db, "act_soon", time.Minute)
	other := &Action{ID: "act_other", Agent: "other-agent", Tool: "refund_order", Args: json.RawMessage(`{}`), Status: StatusPending, ExpiresAt: c.Now().Add(time.Hour)}
	if err := db.RecordAttempt(ctx, other, &Record{Agent: other.Agent, Tool: other.Tool}); err != nil {
		t.Fatal(err)
	}
	c.Set(approvalT0.Add(2 * time.Minute)) // act_soon has expired, though still marked pending
	var got int64 = -1
	a := &Action{ID: "act_new", Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`), Status: StatusDenied}
	if err := db.DecideAndRecord(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool}, func(u Usage) { got = u.AgentPending }); err != nil {
		t.Fatal(err)
	}
	if got != 2 {
		t.Fatalf("AgentPending = %d, want 2", got)
	}
}

func TestActionsLimitAndCount(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	seedPending(t, db, 620, "agent-a", "agent-b")
	got, err := db.Actions(ctx, ActionFilter{Status: StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	n, err := db.CountActions(ctx, ActionFilter{Status: StatusPending, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != DefaultActionLimit || n != 620 {
		t.Fatalf("Actions = %d, CountActions = %d; want %d and 620", len(got), n, DefaultActionLimit)
	}
	rest, err := db.Actions(ctx, ActionFilter{Status: StatusPending, Offset: DefaultActionLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 120 {
		t.Fatalf("second page = %d, want 120", len(rest))
	}
	if n, _ := db.CountActions(ctx, ActionFilter{Agent: "agent-b"}); n != 310 {
		t.Fatalf("CountActions(agent-b) = %d, want 310", n)
	}
}

// TestPendingQueriesUseIndexes: the pending count runs inside every action's
// write transaction and the queue pages run on every visit, so neither may
// scan the whole actions table, which grows with every action ever taken.
func TestPendingQueriesUseIndexes(t *testing.T) {
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	ts := timeText(approvalT0)
	queries := []struct {
		q    string
		args []any
	}{
		{`SELECT COUNT(*) FROM actions WHERE status = ? AND agent = ? AND expires_at > ?`, []any{StatusPending, "a", ts}},
		{`SELECT COUNT(*) FROM actions WHERE status = ? AND agent = ?`, []any{StatusPending, "a"}},
		{`SELECT id FROM actions WHERE status = ? AND (expires_at, id) > (SELECT expires_at, id FROM actions WHERE id = ?) ORDER BY expires_at, id LIMIT 51`, []any{StatusPending, "x"}},
		{`SELECT agent, COUNT(*) FROM actions WHERE status = ? GROUP BY agent`, []any{StatusPending}},
	}
	for _, q := range queries {
		rows, err := db.db.Query("EXPLAIN QUERY PLAN "+q.q, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, d := range plan {
			if d == "SCAN actions" {
				t.Fatalf("%s\nscans the table: %v", q.q, plan)
			}
		}
	}
}
