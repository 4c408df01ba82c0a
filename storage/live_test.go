package storage

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

func recordLoad(t *testing.T, db *DB, version, file string) *PolicyLoad {
	t.Helper()
	l := &PolicyLoad{Version: version, Model: "m", Policy: "p " + version, ModelFile: "/etc/mandate/model.conf", PolicyFile: file,
		Command: "serve start", Identity: "demo-agent", PID: 42, Host: "gw1"}
	if err := db.RecordPolicy(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLivePolicyIsNewestLoad: the newest recorded load is live, with its
// texts; texts are kept once per version.
func TestLivePolicyIsNewestLoad(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	if live, err := db.LivePolicy(ctx); err != nil || live != nil {
		t.Fatalf("LivePolicy on a fresh database = %+v, %v; want none", live, err)
	}
	recordLoad(t, db, "v1", "/a/policy.csv")
	recordLoad(t, db, "v2", "/b/policy.csv")
	recordLoad(t, db, "v1", "/a/policy.csv")
	live, err := db.LivePolicy(ctx)
	if err != nil || live == nil || live.Version != "v1" || live.Policy != "p v1" || live.PolicyFile != "/a/policy.csv" || live.PID != 42 {
		t.Fatalf("LivePolicy = %+v, %v; want the newest load, v1 from /a", live, err)
	}
	loads, err := db.PolicyLoads(ctx, 0)
	if err != nil || len(loads) != 3 || loads[0].Version != "v1" || loads[1].Version != "v2" {
		t.Fatalf("PolicyLoads = %d, %v", len(loads), err)
	}
	var texts int
	if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM policy_texts`).Scan(&texts); err != nil || texts != 2 {
		t.Fatalf("policy_texts rows = %d, %v; want 2", texts, err)
	}
	if _, err := db.db.ExecContext(ctx, `UPDATE policy_loads SET version = 'v9'`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("editing a load: %v, want the append-only refusal", err)
	}
}

// TestDecideUnderStalePolicy: a decision under a policy that is not the
// newest recorded (or with none recorded) is refused inside the decision's
// transaction; the action stays pending and the refusal is recorded.
func TestDecideUnderStalePolicy(t *testing.T) {
	ctx := context.Background()
	approve := Review{Approver: "alice", Approve: true, Comment: "ok", Decision: "allow", Rule: "approve rule"}
	tests := []struct {
		name  string
		loads []string // versions recorded, oldest first
		held  string
		ok    bool
		want  string // in the error
	}{
		{name: "held is live", loads: []string{"v1"}, held: "v1", ok: true},
		{name: "a newer version was recorded", loads: []string{"v1", "v2"}, held: "v1", want: "live policy is version v2 from /b/policy.csv"},
		{name: "an older version was recorded again", loads: []string{"v2", "v1"}, held: "v2", want: "live policy is version v1"},
		{name: "nothing recorded: fail closed", held: "v1", want: "no live policy is recorded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
			for _, v := range tt.loads {
				recordLoad(t, db, v, map[string]string{"v1": "/a/policy.csv", "v2": "/b/policy.csv"}[v])
			}
			a := addPending(t, db, "act_1", time.Hour)
			r := approve
			r.Held = &PolicyRef{Version: tt.held, ModelFile: "/x/model.conf", PolicyFile: "/x/policy.csv"}
			checked := false
			_, err := db.Decide(ctx, a.ID, r, func(*Action, Usage) (Review, error) { checked = true; return approve, nil })
			recs := actionRecords(t, db, a.ID)
			last := recs[len(recs)-1]
			if tt.ok {
				if err != nil || status(t, db, a.ID) != StatusApproved {
					t.Fatalf("Decide = %v, status %s; want approved", err, status(t, db, a.ID))
				}
				return
			}
			var stale *StalePolicyError
			if !errors.As(err, &stale) || mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(err.Error(), tt.want) ||
				!strings.Contains(err.Error(), "version "+tt.held+" from /x/policy.csv") {
				t.Fatalf("Decide error = %v, want a stale-policy conflict saying %q", err, tt.want)
			}
			if checked {
				t.Fatal("the policy check ran under a stale policy")
			}
			if s := status(t, db, a.ID); s != StatusPending {
				t.Fatalf("status %s, want pending", s)
			}
			if len(recs) != 2 || last.Outcome != OutcomeRefused || last.Approver != "alice" || last.Comment != "ok" ||
				!strings.HasPrefix(last.Error, "stale policy: ") || last.PolicyVersion != tt.held {
				t.Fatalf("refusal record %+v; want outcome refused, approver alice, a stale-policy error", last)
			}
			if _, err := db.Verify(ctx); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestDecideWithStaleRates: a decision that converted money (PolicyRef
// names rates) is refused, in the decision's transaction, unless its rates
// are the newest recorded (failing closed with none recorded); the action
// stays pending and the refusal is recorded. Claiming refuses the same way
// and leaves the action approved. A decision that converted nothing (an
// email change) names no rates and is not held to them.
func TestDecideWithStaleRates(t *testing.T) {
	ctx := context.Background()
	approve := Review{Approver: "alice", Approve: true, Comment: "ok", Decision: "allow", Rule: "approve rule"}
	ratesLoad := func(t *testing.T, db *DB, version string) {
		t.Helper()
		l := &RatesLoad{Version: version, Base: "USD", Rates: "base, USD\n", File: "/srv/" + version + "/rates.csv", Command: "serve reload", PID: 42, Host: "gw1"}
		if err := db.RecordRates(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		loads []string // rates versions recorded, oldest first
		held  string   // the rates the decision converted with
		want  string   // in the error; "" for approved
	}{
		{name: "held rates are live", loads: []string{"r1"}, held: "r1"},
		{name: "newer rates were recorded", loads: []string{"r1", "r2"}, held: "r1", want: "the live rates are version r2 from /srv/r2/rates.csv (base USD), loaded by `mandate serve`"},
		{name: "nothing recorded: fail closed", held: "r1", want: "no live rates are recorded"},
		{name: "nothing converted: no rates held", loads: []string{"r2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
			recordLoad(t, db, "v1", "/a/policy.csv")
			for _, v := range tt.loads {
				ratesLoad(t, db, v)
			}
			held := &PolicyRef{Version: "v1", PolicyFile: "/a/policy.csv", Rates: tt.held, RatesFile: "/home/bob/rates.csv"}
			a := addPending(t, db, "act_1", time.Hour)
			r := approve
			r.Held = held
			_, err := db.Decide(ctx, a.ID, r, func(*Action, Usage) (Review, error) { return approve, nil })
			if tt.want == "" {
				if err != nil || status(t, db, a.ID) != StatusApproved {
					t.Fatalf("Decide = %v, status %s; want approved", err, status(t, db, a.ID))
				}
				return
			}
			var stale *StaleRatesError
			if !errors.As(err, &stale) || mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(err.Error(), tt.want) ||
				!strings.Contains(err.Error(), "exchange rates version "+tt.held+" from /home/bob/rates.csv") {
				t.Fatalf("Decide error = %v, want a stale-rates conflict saying %q", err, tt.want)
			}
			if s := status(t, db, a.ID); s != StatusPending {
				t.Fatalf("status %s, want pending", s)
			}
			recs := actionRecords(t, db, a.ID)
			if last := recs[len(recs)-1]; len(recs) != 2 || last.Outcome != OutcomeRefused || last.Approver != "alice" || !strings.HasPrefix(last.Error, "stale rates: ") {
				t.Fatalf("refusal record %+v; want outcome refused, approver alice, a stale-rates error", last)
			}

			// Approved by a process with the live rates, claimed by one without.
			if _, err := db.Decide(ctx, a.ID, Review{Approver: "alice"}, func(*Action, Usage) (Review, error) { return approve, nil }); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := db.ClaimApprovedUnder(ctx, a.ID, held, nil); !errors.As(err, new(*StaleRatesError)) {
					t.Fatalf("claim with stale rates: %v, want a StaleRatesError", err)
				}
			}
			if s := status(t, db, a.ID); s != StatusApproved {
				t.Fatalf("status %s after the claim, want approved", s)
			}
			if recs := actionRecords(t, db, a.ID); len(recs) != 4 || !strings.HasPrefix(recs[3].Error, "stale rates: ") {
				t.Fatalf("%d records after two refused claims, want one refusal more", len(recs))
			}
			if _, err := db.Verify(ctx); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestLiveRatesIsNewestLoad: the newest recorded rates load is live, with
// its text; loads are append-only.
func TestLiveRatesIsNewestLoad(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	if live, err := db.LiveRates(ctx); err != nil || live != nil {
		t.Fatalf("LiveRates on a fresh database = %+v, %v; want none", live, err)
	}
	for _, v := range []string{"r1", "r2"} {
		if err := db.RecordRates(ctx, &RatesLoad{Version: v, Base: "USD", Rates: "base, USD\n# " + v + "\n", File: "/srv/rates.csv", Command: "admin start"}); err != nil {
			t.Fatal(err)
		}
	}
	live, err := db.LiveRates(ctx)
	if err != nil || live == nil || live.Version != "r2" || live.Base != "USD" || live.Rates != "base, USD\n# r2\n" || live.Seq != 2 {
		t.Fatalf("LiveRates = %+v, %v; want r2", live, err)
	}
	if err := db.RecordRates(ctx, &RatesLoad{Version: "r3"}); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("recording rates without a base: %v, want invalid", err)
	}
	if _, err := db.db.ExecContext(ctx, `DELETE FROM rates_loads`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("deleting loads: %v, want the append-only refusal", err)
	}
}

// TestUsageReadsLiveRates: the transaction that records an attempt reads
// the live rates version in the same statement as the live policy, so a
// load recorded by another process (another handle on the database) is
// what the very next decision sees, and none recorded reads as "".
func TestUsageReadsLiveRates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	db, other := openPath(t, path), openPath(t, path)
	decided := func(id string) Usage {
		t.Helper()
		var got Usage
		a := &Action{ID: id, Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`), Currency: "USD", AmountMinor: 100}
		r := &Record{Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`)}
		if err := db.DecideAndRecord(ctx, a, r, func(u Usage) {
			got = u
			a.Decision, a.Rule, a.Status = "deny", "default deny: test", StatusDenied
			r.Decision, r.Rule, r.Outcome = "deny", a.Rule, "refused"
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if u := decided("act_none"); u.LiveRates != "" {
		t.Fatalf("with no rates recorded, Usage.LiveRates = %q, want empty", u.LiveRates)
	}
	for i, v := range []string{"r1", "r2"} {
		if err := other.RecordRates(ctx, &RatesLoad{Version: v, Base: "USD", File: "/srv/rates.csv", Command: "serve reload"}); err != nil {
			t.Fatal(err)
		}
		if u := decided("act_" + v); u.LiveRates != v {
			t.Fatalf("load %d: Usage.LiveRates = %q, want %q, the newest recorded by another process", i, u.LiveRates, v)
		}
	}
	if u, err := db.Usage(ctx, &Action{Agent: "demo-agent", Tool: "refund_order", Currency: "USD"}); err != nil || u.LiveRates != "r2" {
		t.Fatalf("Usage outside a write: %+v, %v; want live rates r2", u, err)
	}
}

// TestClaimApprovedUnder: claiming re-checks the live policy and re-decides
// in the claim's transaction. Stale: the action stays approved and one
// refusal is recorded however often it is retried. Refused now: denied,
// its limits given back, audited. Allowed: claimed once, and the check sees
// usage without the action's own share.
func TestClaimApprovedUnder(t *testing.T) {
	ctx := context.Background()
	c := &fixedClock{t: approvalT0}
	db := openClocked(t, filepath.Join(t.TempDir(), "m.db"), c)
	recordLoad(t, db, "v1", "/a/policy.csv")
	approved := func(id string) *Action {
		a := addPending(t, db, id, time.Hour)
		// Debits count only actions with an amount: give it one.
		if _, err := db.db.ExecContext(ctx, `UPDATE actions SET amount_minor = 15000, currency = 'USD' WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Decide(ctx, id, Review{Approver: "alice"}, func(*Action, Usage) (Review, error) {
			return Review{Approve: true, Comment: "fine", Decision: "allow", Rule: "approve rule"}, nil
		}); err != nil {
			t.Fatal(err)
		}
		return a
	}
	held := &PolicyRef{Version: "v1", PolicyFile: "/a/policy.csv"}

	a := approved("act_stale")
	recordLoad(t, db, "v2", "/b/policy.csv")
	for range 3 {
		if _, err := db.ClaimApprovedUnder(ctx, a.ID, held, nil); !errors.As(err, new(*StalePolicyError)) {
			t.Fatalf("claim under a stale policy: %v, want a StalePolicyError", err)
		}
	}
	if s := status(t, db, a.ID); s != StatusApproved {
		t.Fatalf("status %s, want approved", s)
	}
	var refusals int
	for _, r := range actionRecords(t, db, a.ID) {
		if r.Outcome == OutcomeRefused {
			refusals++
		}
	}
	if refusals != 1 {
		t.Fatalf("%d refusal records after three stale claims, want 1", refusals)
	}

	held = &PolicyRef{Version: "v2", PolicyFile: "/b/policy.csv"}
	b := approved("act_denied")
	var seen Usage
	got, err := db.ClaimApprovedUnder(ctx, b.ID, held, func(_ *Action, ap Approval, u Usage) (Review, error) {
		seen = u
		if ap.Approver != "alice" {
			t.Errorf("approval by %q, want alice", ap.Approver)
		}
		return Review{Approve: false, Decision: "deny", Rule: "p, *, refund_order, true, deny", Note: "the rules now refuse it"}, nil
	})
	if err != nil || got.Status != StatusDenied {
		t.Fatalf("claim refused now = %v, %v; want denied", got, err)
	}
	// act_stale is approved (debited); act_denied's own share is not seen.
	if seen.AgentRefunds24h != 1 || seen.AgentRefundedMinor24h != 15000 {
		t.Fatalf("usage seen %+v, want act_stale's 150.00 only", seen)
	}
	recs := actionRecords(t, db, b.ID)
	last := recs[len(recs)-1]
	if last.Agent != RecoveryAgent || last.Outcome != StatusDenied || last.Approver != "alice" || last.Comment != "fine" || last.Error != "the rules now refuse it" {
		t.Fatalf("denial record %+v", last)
	}
	c2, err := db.ClaimApprovedUnder(ctx, approved("act_ok").ID, held, func(_ *Action, _ Approval, u Usage) (Review, error) {
		seen = u
		return Review{Approve: true}, nil
	})
	if err != nil || c2.Status != StatusExecuting {
		t.Fatalf("claim allowed now = %v, %v; want executing", c2, err)
	}
	// The denied action's debit was given back: only act_stale counts.
	if seen.AgentRefunds24h != 1 || seen.AgentRefundedMinor24h != 15000 {
		t.Fatalf("usage seen after the denial %+v, want act_stale's 150.00 only", seen)
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// TestOldChainVerifiesWithNewFields: records written before approver and
// comment existed (hashed over the original fields only, stored with the
// old column list) still verify, and records appended after them with the
// new fields set verify too; the new fields are covered by the hash.
func TestOldChainVerifiesWithNewFields(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "m.db"))
	prev := genesis
	for seq := int64(1); seq <= 3; seq++ {
		r := &Record{Time: time.Date(2026, 11, 1, 9, 0, int(seq), 0, time.UTC), Agent: "alice", Tool: "refund_order",
			Args: json.RawMessage(`{"amount":"150.00"}`), Decision: "allow", Rule: "approve rule", ActionID: "act_old",
			Phase: PhaseApproval, Outcome: StatusApproved, Error: "ok by alice"}
		// The hash as the code before approver and comment computed it.
		f := r.fields()
		h := hashRecord(prev, seq, f)
		if _, err := db.db.ExecContext(ctx, `INSERT INTO audit (seq, time, agent, tool, args, attrs, decision, rule, policy_version,
			action_id, phase, outcome, error, duration_us, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			seq, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], 0, prev, h); err != nil {
			t.Fatal(err)
		}
		prev = h
	}
	if res, err := db.Verify(ctx); err != nil || res.Count != 3 {
		t.Fatalf("Verify old records = %+v, %v", res, err)
	}
	if err := db.Append(ctx, &Record{Agent: "bob", Tool: "refund_order", Phase: PhaseApproval, Outcome: OutcomeRefused,
		Approver: "bob", Comment: "=HYPERLINK(\"http://x\")", Error: "self-approval refused"}); err != nil {
		t.Fatal(err)
	}
	if res, err := db.Verify(ctx); err != nil || res.Count != 4 {
		t.Fatalf("Verify with a new record = %+v, %v", res, err)
	}
	// The comment is covered by the hash: editing it breaks the chain there.
	for _, q := range []string{`DROP TRIGGER audit_no_update`, `UPDATE audit SET comment = 'fine' WHERE seq = 4`} {
		if _, err := db.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var ce *ChainError
	if _, err := db.Verify(ctx); !errors.As(err, &ce) || ce.Seq != 4 {
		t.Fatalf("Verify after editing a comment = %v, want broken at 4", err)
	}
}

// TestHashedAddsNewFieldsOnlyWhenSet: a record without approver or comment
// hashes as before; either one set changes the hash, and they cannot be
// swapped.
func TestHashedAddsNewFieldsOnlyWhenSet(t *testing.T) {
	base := Record{Agent: "a", Tool: "refund_order", Phase: PhaseApproval}
	h := func(r Record) string { return hashRecord(genesis, 1, r.hashed()) }
	if h(base) != hashRecord(genesis, 1, base.fields()) {
		t.Fatal("a record without approver or comment hashes differently than before")
	}
	seen := map[string]string{h(base): "none"}
	for name, r := range map[string]Record{
		"approver": {Agent: "a", Tool: "refund_order", Phase: PhaseApproval, Approver: "x"},
		"comment":  {Agent: "a", Tool: "refund_order", Phase: PhaseApproval, Comment: "x"},
		"both":     {Agent: "a", Tool: "refund_order", Phase: PhaseApproval, Approver: "x", Comment: "x"},
	} {
		if other, dup := seen[h(r)]; dup {
			t.Fatalf("%s hashes like %s", name, other)
		}
		seen[h(r)] = name
	}
}

// TestCSVCellNeutralisesFormulas: a cell a spreadsheet would evaluate gets
// an apostrophe; others are kept exactly.
func TestCSVCellNeutralisesFormulas(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`=HYPERLINK("http://evil","click")`, `'=HYPERLINK("http://evil","click")`},
		{"+1+1", "'+1+1"},
		{"-2+3", "'-2+3"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"\t=1", "'\t=1"},
		{"\r=1", "'\r=1"},
		{"", ""},
		{"refund 30.00", "refund 30.00"},
		{"a=1", "a=1"},
		{`{"amount":"30.00"}`, `{"amount":"30.00"}`},
	} {
		if got := CSVCell(tt.in); got != tt.want {
			t.Errorf("CSVCell(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	r := &Record{Seq: 1, Agent: "=cmd|' /C calc'!A0", Approver: "alice", Comment: "+44 20 7946 0000", Error: "-x", Rule: "@y"}
	var b strings.Builder
	w := csv.NewWriter(&b)
	if err := w.Write(CSVHeader); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(r.CSVRow()); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	rows, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
	if err != nil || len(rows) != 2 || len(rows[1]) != len(CSVHeader) {
		t.Fatalf("CSV %q: %v", b.String(), err)
	}
	row := map[string]string{}
	for i, k := range rows[0] {
		row[k] = rows[1][i]
	}
	for k, want := range map[string]string{"agent": "'=cmd|' /C calc'!A0", "approver": "alice", "comment": "'+44 20 7946 0000", "error": "'-x", "rule": "'@y", "seq": "1"} {
		if row[k] != want {
			t.Errorf("column %s = %q, want %q", k, row[k], want)
		}
	}
}

// TestRedactedMasksComment: an approver's comment may quote the customer;
// --redact masks personal data there as in the error.
func TestRedactedMasksComment(t *testing.T) {
	r := &Record{Approver: "alice", Comment: "called ada@example.com to confirm"}
	if got := r.Redacted().Comment; strings.Contains(got, "ada@example.com") || !strings.Contains(got, "to confirm") {
		t.Fatalf("redacted comment %q", got)
	}
}
