package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

// mixStats is what checkMix counted.
type mixStats struct {
	status     map[string]int // actions by final status
	reconciled int            // outcomes recovery wrote
	approved   int            // approvals recorded
}

// checkMix checks, with every process stopped but the store service, that
// the trail verifies and agrees with the actions table and the counters,
// that every action has settled with at most one outcome, and that the
// store changed exactly what the trail records as executed, once each.
func checkMix(t *testing.T, db *storage.DB, dbPath, storePath string, agent *mixAgent) mixStats {
	t.Helper()
	ctx := context.Background()
	stdout, stderr, err := runMandate(t, faultEnv, "audit", "verify", "--db", dbPath)
	if err != nil || !strings.HasPrefix(stdout, "unanchored: ") || !strings.Contains(stdout, "actions agree with the trail") || strings.Contains(stdout, "DISAGREE") {
		t.Fatalf("mandate audit verify: %v\n%s%s", err, stdout, stderr)
	}

	type history struct {
		attempts, approvals int
		outcomes            []storage.Record
		args                map[string]string
		tool                string
	}
	trail := map[string]*history{}
	var ids []string
	st := mixStats{status: map[string]int{}}
	if err := db.Records(ctx, storage.Filter{}, func(r *storage.Record) error {
		switch r.Tool {
		case "refund_order", "cancel_order", "update_account":
		default:
			return nil
		}
		h := trail[r.ActionID]
		if h == nil {
			h = &history{tool: r.Tool}
			trail[r.ActionID] = h
			ids = append(ids, r.ActionID)
		}
		switch r.Phase {
		case storage.PhaseAttempt:
			h.attempts++
			if err := json.Unmarshal(r.Args, &h.args); err != nil {
				return fmt.Errorf("record %d: args %s: %v", r.Seq, r.Args, err)
			}
		case storage.PhaseOutcome:
			h.outcomes = append(h.outcomes, *r)
			if strings.Contains(r.Error, "reconciled") {
				st.reconciled++
			}
		case storage.PhaseApproval:
			h.approvals++
			st.approved++
		}
		return nil
	}); err != nil {
		t.Fatalf("read the trail: %v", err)
	}

	sdb, err := sql.Open("sqlite", "file:"+storePath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	type refund struct {
		order string
		minor int64
	}
	refunds := map[string]refund{}
	rows := query(t, sdb, `SELECT idempotency_key, order_id, amount FROM refunds`)
	for rows.Next() {
		var k string
		var r refund
		scan(t, rows, &k, &r.order, &r.minor)
		refunds[k] = r
	}
	ops := map[string]string{} // idempotency key → kind
	rows = query(t, sdb, `SELECT idempotency_key, kind FROM operations`)
	for rows.Next() {
		var k, kind string
		scan(t, rows, &k, &kind)
		ops[k] = kind
	}

	refunded := map[string]int64{} // order → minor units the trail says were refunded
	cancelled := map[string]bool{}
	phones := map[string]map[string]bool{} // customer → values executed updates set
	byKey := map[string]string{}
	for _, id := range ids {
		h := trail[id]
		act, err := db.Action(ctx, id)
		if err != nil {
			t.Fatalf("action %s: %v", id, err)
		}
		st.status[act.Status]++
		if h.attempts != 1 || len(h.outcomes) > 1 {
			t.Fatalf("action %s (%s): %d attempt and %d outcome records, want 1 and at most 1", id, act.Status, h.attempts, len(h.outcomes))
		}
		switch act.Status {
		case storage.StatusExecuted, storage.StatusFailed:
			if len(h.outcomes) != 1 || h.outcomes[0].Outcome != act.Status {
				t.Fatalf("action %s is %s; its outcome records: %+v", id, act.Status, h.outcomes)
			}
		case storage.StatusDenied, storage.StatusPending, storage.StatusExpired:
			if len(h.outcomes) != 0 {
				t.Fatalf("action %s is %s but has the outcome %q", id, act.Status, h.outcomes[0].Outcome)
			}
		default:
			t.Fatalf("action %s is left %s after recovery", id, act.Status)
		}
		if k := act.IdempotencyKey; k != "" {
			if other, dup := byKey[k]; dup {
				t.Fatalf("idempotency key %s names two actions, %s and %s", k, other, id)
			}
			byKey[k] = id
			if c := agent.keys[k]; c != nil && c.action != "" && c.action != id {
				t.Fatalf("idempotency key %s: the agent was told action %s, the table has %s", k, c.action, id)
			}
		}
		done := act.Status == storage.StatusExecuted
		switch h.tool {
		case "refund_order":
			r, inStore := refunds[id]
			if done != inStore {
				t.Fatalf("refund %s is %s; the store has a refund with its key: %v", id, act.Status, inStore)
			}
			if !done {
				continue
			}
			m, err := mandate.ParseMoney(h.args["amount"], "USD")
			if err != nil {
				t.Fatal(err)
			}
			if r.order != h.args["order_id"] || r.minor != m.Minor {
				t.Fatalf("refund %s asked %v; the store refunded %d on %s", id, h.args, r.minor, r.order)
			}
			refunded[r.order] += r.minor
		case "cancel_order":
			if done != (ops[id] == "cancel_order") {
				t.Fatalf("cancellation %s is %s; the store's operation under its key: %q", id, act.Status, ops[id])
			}
			if done {
				cancelled[h.args["order_id"]] = true
			}
		case "update_account":
			if done != (ops[id] == "update_customer") {
				t.Fatalf("account update %s is %s; the store's operation under its key: %q", id, act.Status, ops[id])
			}
			if done {
				c := h.args["customer_id"]
				if phones[c] == nil {
					phones[c] = map[string]bool{}
				}
				phones[c][h.args["value"]] = true
			}
		}
	}
	for k, r := range refunds {
		if trail[k] == nil || trail[k].tool != "refund_order" {
			t.Fatalf("the store refunded %d on %s under key %s, which no refund in the trail has", r.minor, r.order, k)
		}
	}
	for k, kind := range ops {
		if trail[k] == nil {
			t.Fatalf("the store did a %s under key %s, which no action in the trail has", kind, k)
		}
	}

	rows = query(t, sdb, `SELECT id, status, refunded FROM orders`)
	for rows.Next() {
		var id, status string
		var minor int64
		scan(t, rows, &id, &status, &minor)
		if minor != refunded[id] {
			t.Fatalf("order %s: the store shows %d minor units refunded, executed refunds in the trail %d", id, minor, refunded[id])
		}
		if (status == "cancelled") != cancelled[id] {
			t.Fatalf("order %s is %s in the store; an executed cancellation in the trail: %v", id, status, cancelled[id])
		}
	}
	rows = query(t, sdb, `SELECT id, phone FROM customers`)
	for rows.Next() {
		var id, phone string
		scan(t, rows, &id, &phone)
		if set := phones[id]; (set == nil && phone != "+15550000000") || (set != nil && !set[phone]) {
			t.Fatalf("customer %s has phone %s; executed updates set %v", id, phone, set)
		}
	}
	return st
}

func query(t *testing.T, db *sql.DB, q string) *sql.Rows {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rows.Close() })
	return rows
}

func scan(t *testing.T, rows *sql.Rows, dest ...any) {
	t.Helper()
	if err := rows.Scan(dest...); err != nil {
		t.Fatal(err)
	}
}
