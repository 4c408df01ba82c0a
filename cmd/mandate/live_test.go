package main

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
)

// emergencyDeny is the kill switch an operator adds when agent refunds must
// stop at once.
const emergencyDeny = "\np, *, refund_order, true, deny\n"

// writePolicy writes the shipped policy plus extra to dir/policy.csv and
// returns its path.
func writePolicy(t *testing.T, dir, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "policy.csv")
	if err := os.WriteFile(p, append(append([]byte(nil), mandate.DefaultPolicy...), extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// recordLive records the policy file at path (with the embedded model and
// rates) as loaded by a server, as `mandate serve` or `mandate admin` does.
func recordLive(t *testing.T, dbPath, path, command string) string {
	t.Helper()
	ctx := context.Background()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := policy.Source{Name: "embedded model.conf", Data: mandate.DefaultModel}
	src := policy.Source{Name: path, Data: b}
	pol, err := policy.Load(m, src)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.RecordPolicy(ctx, policyLoad(pol, m, src, command, "")); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, ratesLoad(rates.Default(), command, "")); err != nil {
		t.Fatal(err)
	}
	return pol.Version
}

// actionTrail lists an action's audit records as phase/outcome/agent, and
// returns the last record.
func actionTrail(t *testing.T, dbPath, id string) ([]string, *storage.Record) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []string
	var last *storage.Record
	err = db.Records(ctx, storage.Filter{ActionID: id}, func(r *storage.Record) error {
		out = append(out, r.Phase+"/"+r.Outcome+"/"+r.Agent)
		last = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, last
}

// TestApprovalsCLIRefusesStalePolicy: the approvals CLI decides only under
// the live policy, the newest one a server recorded. With --policy naming
// another file, or run from a directory whose policy.csv differs, it
// refuses, names the file and version it holds and the live one and where
// that was loaded, changes nothing, and the refusal is in the audit trail.
func TestApprovalsCLIRefusesStalePolicy(t *testing.T) {
	liveVersion := policy.Version(mandate.DefaultModel, mandate.DefaultPolicy)
	tests := []struct {
		name  string
		setup func(t *testing.T) (args []string, heldFile string) // extra flags; the file the CLI holds
	}{
		{name: "--policy names another file", setup: func(t *testing.T) ([]string, string) {
			evil := writePolicy(t, t.TempDir(), "\ng, mallory, supervisor\n")
			return []string{"--as", "alice", "--policy", evil}, evil
		}},
		{name: "run from another directory", setup: func(t *testing.T) ([]string, string) {
			dir := t.TempDir()
			other := writePolicy(t, dir, "\ng, mallory, supervisor\n")
			t.Chdir(dir)
			return []string{"--as", "alice"}, other
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, st, ids := approvalFiles(t, "150.00")
			id := ids[0]
			// Both can sign in (mallory only by a users row made behind
			// the CLI's back): the refusal below is the stale policy's.
			signIn(t, db, "alice", "mallory")
			args, held := tt.setup(t)
			heldVersion := policy.Version(mandate.DefaultModel, mustRead(t, held))
			out, err := runCLI(t, "", append([]string{"approvals", "approve", id, "--db", db, "--store", st}, args...)...)
			if err == nil {
				t.Fatalf("approve under a policy that is not live succeeded:\n%s", out)
			}
			msg := err.Error()
			for _, want := range []string{held, heldVersion, liveVersion, "embedded policy.csv", "`mandate serve` (agent demo-agent)", "nothing was done"} {
				if !strings.Contains(msg, want) {
					t.Fatalf("message lacks %q:\n%s", want, msg)
				}
			}
			trail, last := actionTrail(t, db, id)
			if got := strings.Join(trail, " "); !strings.HasPrefix(got, "attempt/pending/demo-agent approval/refused/") || len(trail) != 2 {
				t.Fatalf("audit trail %v, want the attempt and one refusal", trail)
			}
			if !strings.Contains(last.Error, "stale policy") || last.PolicyVersion != heldVersion {
				t.Fatalf("refusal record error %q version %q, want a stale-policy refusal under %s", last.Error, last.PolicyVersion, heldVersion)
			}
			if out, err := runCLI(t, "", "approvals", "show", id, "--db", db); err != nil || !strings.Contains(out, "pending") {
				t.Fatalf("show: %v\n%s\nwant the action still pending", err, out)
			}
		})
	}
}

// TestApprovalsCLIRefusesStaleRates: limits compare money in the base
// currency, so the approvals CLI decides only with the live rates, the
// newest a server recorded. With --rates naming other rates (where a
// 150.00 EUR refund might fall under the approver's limit) it refuses,
// names both rates versions and where the live ones were loaded, changes
// nothing, and the refusal is in the audit trail.
func TestApprovalsCLIRefusesStaleRates(t *testing.T) {
	db, st, ids := approvalFiles(t, "150.00")
	signIn(t, db, "alice")
	evil := filepath.Join(t.TempDir(), "evil-rates.csv")
	if err := os.WriteFile(evil, []byte("base, USD\nEUR, 0.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := rates.Parse(evil, mustRead(t, evil))
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "", "approvals", "approve", ids[0], "--db", db, "--store", st, "--as", "alice", "--rates", evil)
	if err == nil {
		t.Fatalf("approve with rates that are not live succeeded:\n%s", out)
	}
	for _, want := range []string{"exchange rates version " + held.Version + " from " + evil, "the live rates are version " + rates.Default().Version,
		"embedded rates.csv (base USD), loaded by `mandate serve` (agent demo-agent)", "nothing was done"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("message lacks %q:\n%s", want, err)
		}
	}
	trail, last := actionTrail(t, db, ids[0])
	if got := strings.Join(trail, " "); got != "attempt/pending/demo-agent approval/refused/alice" {
		t.Fatalf("audit trail %v, want the attempt and alice's refusal", trail)
	}
	if !strings.HasPrefix(last.Error, "stale rates: ") {
		t.Fatalf("refusal record error %q, want a stale-rates refusal", last.Error)
	}
	if out, err := runCLI(t, "", "approvals", "show", ids[0], "--db", db); err != nil || !strings.Contains(out, "pending") {
		t.Fatalf("show: %v\n%s\nwant the action still pending", err, out)
	}
}

// TestApprovalsCLIRolesFromTheLivePolicy: who may sign in is read from the
// live policy, never from the file the CLI is pointed at: a --policy that
// makes mallory a supervisor does not let mallory in, and the refusal is
// on the action's record.
func TestApprovalsCLIRolesFromTheLivePolicy(t *testing.T) {
	db, st, ids := approvalFiles(t, "150.00")
	signIn(t, db, "alice", "mallory")
	evil := writePolicy(t, t.TempDir(), "\ng, mallory, supervisor\n")
	out, err := runCLI(t, "", "approvals", "approve", ids[0], "--db", db, "--store", st, "--as", "mallory", "--policy", evil)
	if err == nil || !strings.Contains(err.Error(), "mallory holds no approver or auditor role in the live policy") {
		t.Fatalf("approve as mallory with --policy evil.csv: %v\n%s\nwant a refusal from the live policy's roles", err, out)
	}
	trail, _ := actionTrail(t, db, ids[0])
	if got := strings.Join(trail, " "); !strings.Contains(got, "mallory") || strings.Contains(got, "executed") {
		t.Fatalf("audit trail %v, want mallory's refused sign-in and nothing executed", trail)
	}
}

// TestApprovalsCLIFailsClosedWithoutLivePolicy: a database in which no
// server has recorded a policy yet has no live policy to compare with, and
// the CLI does not record its own: it refuses.
func TestApprovalsCLIFailsClosedWithoutLivePolicy(t *testing.T) {
	ctx := context.Background()
	db, st, ids := approvalFiles(t, "150.00")
	// Take back the load approvalFiles recorded, as if no server had
	// started since the database was upgraded (the loads are append-only,
	// so the trigger goes first).
	sdb, err := storage.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	loads, err := sdb.PolicyLoads(ctx, 0)
	sdb.Close()
	if err != nil || len(loads) != 1 {
		t.Fatalf("PolicyLoads = %d, %v; want the one recorded by approvalFiles", len(loads), err)
	}
	raw, err := sql.Open("sqlite", storage.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER policy_loads_no_delete`, `DELETE FROM policy_loads`} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	signIn(t, db, "alice")
	_, err = runCLI(t, "", "approvals", "approve", ids[0], "--as", "alice", "--db", db, "--store", st)
	if err == nil || !strings.Contains(err.Error(), "no live policy is recorded") {
		t.Fatalf("approve with no recorded policy: %v, want a refusal saying none is recorded", err)
	}
}

// TestApprovalsCLIEmergencyDeny: an emergency rule denying agent refunds,
// added after an action went pending and now live, stops its approval: the
// action is denied, not executed, and both the approver's comment and the
// reason are in the audit record's own fields.
func TestApprovalsCLIEmergencyDeny(t *testing.T) {
	db, st, ids := approvalFiles(t, "150.00")
	id := ids[0]
	kill := writePolicy(t, t.TempDir(), emergencyDeny)
	recordLive(t, db, kill, "serve reload")
	signIn(t, db, "alice")
	out, err := runCLI(t, "", "approvals", "approve", id, "--as", "alice", "--comment", "customer is right", "--db", db, "--store", st, "--policy", kill)
	if err == nil || !strings.Contains(err.Error(), "the rules now refuse") {
		t.Fatalf("approve under the emergency rule: %v\n%s; want refused by the rules", err, out)
	}
	trail, last := actionTrail(t, db, id)
	if got := strings.Join(trail, " "); got != "attempt/pending/demo-agent approval/denied/alice" {
		t.Fatalf("audit trail %s", got)
	}
	if last.Approver != "alice" || last.Comment != "customer is right" || !strings.Contains(last.Error, "p, *, refund_order, true, deny") ||
		!strings.Contains(last.Rule, "p, *, refund_order, true, deny") {
		t.Fatalf("denial record approver %q comment %q error %q rule %q", last.Approver, last.Comment, last.Error, last.Rule)
	}
	if out, _ := runCLI(t, "", "approvals", "show", id, "--db", db); !strings.Contains(out, "denied") {
		t.Fatalf("show:\n%s\nwant denied", out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuditExportApproverAndComment: an approval's approver and comment are
// their own fields in every export format, not the error; a refused
// self-approval is in the trail as a security event; CSV cells a spreadsheet
// would evaluate are neutralised; the chain verifies.
func TestAuditExportApproverAndComment(t *testing.T) {
	db, st, ids := approvalFiles(t, "150.00")
	id := ids[0]
	// demo-agent gets a users row and the password, yet as an agent it
	// cannot sign in to decide: the refusal is in the action's lineage.
	signIn(t, db, "alice", "demo-agent")
	if _, err := runCLI(t, "", "approvals", "approve", id, "--as", "demo-agent", "--db", db, "--store", st); err == nil {
		t.Fatal("the requester approved its own action")
	}
	if out, err := runCLI(t, "", "approvals", "approve", id, "--as", "alice", "--comment", "=1+1 goodwill", "--db", db, "--store", st); err != nil {
		t.Fatalf("approve: %v\n%s", err, out)
	}

	out, err := runCLI(t, "", "audit", "export", "--db", db, "--action", id)
	if err != nil {
		t.Fatal(err)
	}
	var self, approval map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		switch r["outcome"] {
		case storage.OutcomeRefused:
			self = r
		case storage.StatusApproved:
			approval = r
		}
	}
	if self == nil || self["agent"] != "demo-agent" || self["approver"] != "demo-agent" || self["tool"] != "admin_login" || !strings.Contains(self["error"].(string), "demo-agent holds no approver") {
		t.Fatalf("self-approval record %v, want a refusal naming demo-agent", self)
	}
	if approval == nil || approval["approver"] != "alice" || approval["comment"] != "=1+1 goodwill" || approval["error"] != "" {
		t.Fatalf("approval record %v, want approver alice and the comment in its own field", approval)
	}

	out, err = runCLI(t, "", "audit", "export", "--db", db, "--action", id, "--format", "csv")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, k := range rows[0] {
		col[k] = i
	}
	found := false
	for _, row := range rows[1:] {
		if row[col["approver"]] == "alice" {
			found = true
			if got := row[col["comment"]]; got != "'=1+1 goodwill" {
				t.Fatalf("CSV comment cell %q, want it neutralised", got)
			}
		}
	}
	if !found {
		t.Fatalf("no CSV row with approver alice:\n%s", out)
	}

	out, err = runCLI(t, "", "audit", "export", "--db", db, "--action", id, "--format", "ocsf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"approver":"alice","comment":"=1+1 goodwill"`) {
		t.Fatalf("OCSF export lacks the approver and comment:\n%s", out)
	}
	if out, err := runCLI(t, "", "audit", "verify", "--db", db); err != nil || !strings.HasPrefix(out, "unanchored:") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

// signIn gives names CLI credentials: a users row with cliPassword and the
// password in MANDATE_ADMIN_PASSWORD for this test.
func signIn(t *testing.T, db string, names ...string) {
	t.Helper()
	addUsers(t, db, names...)
	t.Setenv("MANDATE_ADMIN_PASSWORD", cliPassword)
}

// TestEditBetweenLoadAndWatchIsCaught: serve and admin read their policy
// files long before they start watching them (database, migrations,
// store). A save in between, already reloaded and recorded as live by a
// server running beside them, used to be lost: the starting process
// recorded its older copy as live over it and kept deciding under it until
// the next save, and the process holding the file's rules refused every
// action. Once the watch is in place, the files are checked once.
func TestEditBetweenLoadAndWatchIsCaught(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "mandate.db")
	polPath := writePolicy(t, dir, "")

	// The starting process reads its files (pf.load, as runServe and
	// runAdminServe do long before keepPolicyLive).
	pf := policyFlags{policy: polPath}
	pol, err := pf.load()
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile the operator saves an edit, and a serve already running
	// (watching the same file) reloads it and records it as live.
	if err := os.WriteFile(polPath, append(append([]byte(nil), mandate.DefaultPolicy...), emergencyDeny...), 0o644); err != nil {
		t.Fatal(err)
	}
	fileVersion := recordLive(t, dbPath, polPath, "serve reload")
	if fileVersion == pol.Version {
		t.Fatal("the edit did not change the version")
	}
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	engine := policy.NewEngine(pol)
	if err := keepPolicyLive(ctx, db, engine, &pf, "admin", "", slog.New(slog.DiscardHandler), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		live, err := db.LivePolicy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if engine.Policy().Version == fileVersion && live.Version == fileVersion {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy.csv holds version %s, but this process holds %s and the live version is %s (recorded by %q): the edit was lost and the old rules are live",
				fileVersion, engine.Policy().Version, live.Version, live.Command)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
