package storage

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/pgtest"
)

// TestCheckAction: the one-action check says what CrossCheck says about that
// action, on the agreeing fixture and after each rewrite of a row.
func TestCheckAction(t *testing.T) {
	ids := []string{"act_0", "act_1", "act_2", "act_3", "act_4", "act_5", "act_6", "act_7", "act_8", "act_r"}
	for _, c := range []struct {
		name  string
		stmts []string
		want  map[string]string // action id -> its disagreements, joined by newlines ("" for none)
	}{
		{"untouched", nil, nil},
		{"executed rewritten as denied by bob",
			[]string{`UPDATE actions SET status = 'denied', approver = 'bob' WHERE id = 'act_1'`},
			map[string]string{"act_1": `action act_1: status: table "denied", trail "executed"` + "\n" + `action act_1: approver: table "bob", trail ""`}},
		{"approver swapped",
			[]string{`UPDATE actions SET approver = 'mallory' WHERE id = 'act_3'`},
			map[string]string{"act_3": `action act_3: approver: table "mallory", trail "alice"`}},
		{"row deleted",
			[]string{`DELETE FROM actions WHERE id = 'act_1'`},
			map[string]string{"act_1": `action act_1: row: table "missing", trail "executed"`}},
		{"row invented",
			[]string{`INSERT INTO actions (id, agent, tool, args, args_digest, decision, rule, policy_version, status, result, error,
				created_at, updated_at, expires_at, idempotency_key, customer_id, amount_minor, currency, approver, comment, decided_at)
				SELECT 'act_0', agent, tool, args, args_digest, decision, rule, policy_version, status, result, error,
				created_at, updated_at, expires_at, '', customer_id, amount_minor, currency, approver, comment, decided_at FROM actions WHERE id = 'act_1'`},
			map[string]string{"act_0": `action act_0: row: table "executed", trail "no attempt record"`}},
		{"a pending refund's arguments rewritten, digest and all",
			[]string{`UPDATE actions SET args = '` + rewrittenArgs + `', args_digest = '` + Digest([]byte(rewrittenArgs)) + `' WHERE id = 'act_6'`},
			map[string]string{"act_6": `action act_6: args: table "sha256 ` + Digest([]byte(rewrittenArgs)) + `", trail "sha256 ` + Digest([]byte(`{"order_id":"ord_1002"}`)) + `"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := crossFixture(t)
			raw, err := sql.Open("sqlite", DSN(path))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.stmts {
				if _, err := raw.Exec(s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			raw.Close()
			ctx := context.Background()
			db := openClocked(t, path, &fixedClock{t: approvalT0.Add(3 * time.Hour)})
			all, err := db.CrossCheck(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				ds, err := db.CheckAction(ctx, id)
				if id == "act_0" && c.want[id] == "" {
					if mandate.ErrorCode(err) != mandate.ENOTFOUND {
						t.Fatalf("CheckAction(%s) with neither row nor records: %v, want not_found", id, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("CheckAction(%s): %v", id, err)
				}
				var got, fromAll []string
				for _, d := range ds {
					got = append(got, d.String())
				}
				for _, d := range all.Disagreements {
					if d.ActionID == id {
						fromAll = append(fromAll, d.String())
					}
				}
				if g := strings.Join(got, "\n"); g != c.want[id] || g != strings.Join(fromAll, "\n") {
					t.Fatalf("CheckAction(%s):\n%s\nwant:\n%s\nCrossCheck says:\n%s", id, g, c.want[id], strings.Join(fromAll, "\n"))
				}
			}
		})
	}
}

// rewrittenArgs is what a writer of the actions table puts in a refund's
// row to have a larger amount approved than the agent asked for.
const rewrittenArgs = `{"amount":"1500.00","order_id":"ord_1002"}`

// TestCrossCheckArgsRewrite, on both engines: an actions row whose
// arguments (and args_digest) were rewritten, which an approval would
// execute, disagrees with its attempt record in CrossCheck and CheckAction.
// On PostgreSQL the application role may UPDATE actions, so this is what
// `audit verify` has to catch.
func TestCrossCheckArgsRewrite(t *testing.T) {
	path := crossFixture(t)
	stmt := `UPDATE actions SET args = '` + rewrittenArgs + `', args_digest = '` + Digest([]byte(rewrittenArgs)) + `' WHERE id = 'act_6'`
	if onPostgres(t) {
		if err := pgtest.Exec(engineDB(t, path), stmt); err != nil {
			t.Fatal(err)
		}
	} else {
		raw, err := sql.Open("sqlite", DSN(path))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(stmt); err != nil {
			t.Fatal(err)
		}
		raw.Close()
	}
	ctx := context.Background()
	db := openClocked(t, path, &fixedClock{t: approvalT0.Add(3 * time.Hour)})
	want := `action act_6: args: table "sha256 ` + Digest([]byte(rewrittenArgs)) + `", trail "sha256 ` + Digest([]byte(`{"order_id":"ord_1002"}`)) + `"`
	all, err := db.CrossCheck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Disagreements) != 1 || all.Disagreements[0].String() != want {
		t.Fatalf("CrossCheck: %v\nwant only %s", all.Disagreements, want)
	}
	ds, err := db.CheckAction(ctx, "act_6")
	if err != nil || len(ds) != 1 || ds[0].String() != want {
		t.Fatalf("CheckAction: %v, %v\nwant only %s", ds, err, want)
	}
}
