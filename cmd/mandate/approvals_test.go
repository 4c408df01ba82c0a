package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/crypto/bcrypt"
)

// approvalFiles makes a gateway database and a demo store in a temporary
// directory and asks for a refund of amount on ord_1002 as demo-agent
// through the real guard, in process; it returns the paths and the pending
// action's id.
func approvalFiles(t *testing.T, amounts ...string) (dbPath, storePath string, ids []string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	dbPath, storePath = cliDB(t, filepath.Join(dir, "mandate.db")), filepath.Join(dir, "store.db")
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// As `mandate serve` does at start: the embedded policy and rates are
	// the live ones.
	if err := db.RecordPolicy(ctx, policyLoad(pol, policy.Source{Name: "embedded model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "embedded policy.csv", Data: mandate.DefaultPolicy}, "serve start", "demo-agent")); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, ratesLoad(rates.Default(), "serve start", "demo-agent")); err != nil {
		t.Fatal(err)
	}
	st, be, _, err := openStore(ctx, storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := demoClient(ctx, &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Backend: be}, "demo-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, amount := range amounts {
		res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
			Arguments: map[string]any{"order_id": "ord_1002", "amount": amount, "reason": "Late delivery\nsecond line"}}})
		if err != nil {
			t.Fatal(err)
		}
		var out tools.ActionResult
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, &out); err != nil || out.Status != storage.StatusPending {
			t.Fatalf("refund of %s: %s, want pending", amount, b)
		}
		ids = append(ids, out.ActionID)
	}
	return dbPath, storePath, ids
}

func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String() + errOut.String(), err
}

// cliPassword is the approvers' password in the CLI tests.
const cliPassword = "plum-velvet-harbour-42"

// addUsers adds web/CLI users with cliPassword (a cheap hash: the tests
// are about who may decide, not about bcrypt's cost).
func addUsers(t *testing.T, dbPath string, names ...string) {
	t.Helper()
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash, err := bcrypt.GenerateFromPassword([]byte(cliPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := db.AddUser(context.Background(), n, string(hash)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestApprovalsCLI(t *testing.T) {
	db, st, ids := approvalFiles(t, "150.00", "120.00")
	first, second := ids[0], ids[1]
	addUsers(t, db, "alice", "bob", "demo-agent")
	t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", cliPassword) // bob proves who he is
	tokOut, err := runCLI(t, "", "admin", "user", "token", "bob", "--db", db)
	if err != nil {
		t.Fatal(err)
	}
	bobToken := strings.Fields(tokOut)[0]
	tokenFile := filepath.Join(t.TempDir(), "bob.token")
	if err := os.WriteFile(tokenFile, []byte(bobToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pw := map[string]string{"MANDATE_ADMIN_PASSWORD": cliPassword}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr bool
		usage   bool     // the error is a usage error (exit status 2)
		want    []string // substrings of the output or error
		not     []string // substrings that must not appear
	}{
		{name: "list pending", args: []string{"approvals", "list", "--db", db},
			want: []string{first, second, "pending", "demo-agent", "refund_order", "amount=150.00"}, not: []string{"\nsecond line"}},
		{name: "no credentials", args: []string{"approvals", "approve", first, "--as", "alice", "--db", db, "--store", st},
			wantErr: true, want: []string{"no credentials"}},
		{name: "wrong password", args: []string{"approvals", "approve", first, "--as", "alice", "--db", db, "--store", st},
			env: map[string]string{"MANDATE_ADMIN_PASSWORD": "not-alices-password"}, wantErr: true, want: []string{"do not match"}},
		{name: "the requester cannot sign in", args: []string{"approvals", "approve", first, "--as", "demo-agent", "--db", db, "--store", st},
			env: pw, wantErr: true, want: []string{"demo-agent holds no approver"}},
		{name: "an agent without a user is refused", args: []string{"approvals", "approve", first, "--as", "senior-bot", "--db", db, "--store", st},
			env: pw, wantErr: true, want: []string{"do not match"}},
		{name: "deny needs a comment", args: []string{"approvals", "deny", second, "--as", "bob", "--db", db, "--store", st},
			env: pw, wantErr: true, usage: true, want: []string{"--comment"}},
		{name: "approve needs --as or a token", args: []string{"approvals", "approve", first, "--db", db, "--store", st},
			wantErr: true, usage: true, want: []string{"--as"}},
		{name: "a token names its owner", args: []string{"approvals", "approve", first, "--as", "alice", "--token-file", tokenFile, "--db", db, "--store", st},
			wantErr: true, want: []string{"belongs to bob"}},
		{name: "a forged token", args: []string{"approvals", "approve", first, "--db", db, "--store", st},
			env: map[string]string{"MANDATE_APPROVER_TOKEN": "mdt_" + strings.Repeat("0", 64)}, wantErr: true, want: []string{"do not match"}},
		{name: "approve executes", args: []string{"approvals", "approve", first, "--as", "alice", "--comment", "goodwill", "--db", db, "--store", st},
			env: pw, want: []string{first, "approved by alice and executed", `"amount":"150.00"`}},
		{name: "approve again is refused", args: []string{"approvals", "approve", "--db", db, "--store", st, first},
			env: map[string]string{"MANDATE_APPROVER_TOKEN": bobToken}, wantErr: true, want: []string{"executed, not pending"}},
		{name: "deny with a token file", args: []string{"approvals", "deny", second, "--token-file", tokenFile, "--comment", "already refunded by phone", "--db", db, "--store", st},
			want: []string{second, "denied by bob"}},
		{name: "show lineage", args: []string{"approvals", "show", first, "--db", db},
			want: []string{"executed", "decided by", "alice", "goodwill", "attempt", "approval", "outcome"}},
		{name: "show denial", args: []string{"approvals", "show", second, "--db", db},
			want: []string{"denied", "already refunded by phone"}, not: []string{"outcome"}},
		{name: "list executed", args: []string{"approvals", "list", "--status", "executed", "--db", db},
			want: []string{first}, not: []string{second}},
		{name: "nothing pending", args: []string{"approvals", "list", "--db", db}, want: []string{"no pending actions"}},
		{name: "unknown action", args: []string{"approvals", "show", "act_nope", "--db", db}, wantErr: true, want: []string{"no action"}},
		{name: "missing db", args: []string{"approvals", "list", "--db", filepath.Join(t.TempDir(), "typo.db")}, wantErr: true, want: []string{"no audit database"}},
		{name: "unknown subcommand", args: []string{"approvals", "purge"}, wantErr: true, usage: true, want: []string{"unknown subcommand"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"MANDATE_ADMIN_PASSWORD", "MANDATE_APPROVER_TOKEN", "MANDATE_APPROVER"} {
				t.Setenv(k, tt.env[k])
			}
			out, err := runCLI(t, "", tt.args...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v; output:\n%s", err, tt.wantErr, out)
			}
			var ue usageError
			if isUsage := err != nil && errors.As(err, &ue); isUsage != tt.usage {
				t.Fatalf("usage error = %v, want %v (%v)", isUsage, tt.usage, err)
			}
			if err != nil {
				out += err.Error()
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Fatalf("output has %q:\n%s", w, out)
				}
			}
		})
	}
	// Every refused sign-in is in the audit trail, without the password.
	ctx := context.Background()
	sdb, err := storage.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]int{}
	err = sdb.Records(ctx, storage.Filter{Tool: "admin_login"}, func(r *storage.Record) error {
		if strings.Contains(string(r.Args), "not-alices-password") || strings.Contains(r.Error, "not-alices-password") {
			t.Errorf("the audit record holds the password: %+v", r)
		}
		refused[r.Agent]++
		if r.ActionID != first {
			t.Errorf("refused sign-in for %s recorded under action %q, want %s's lineage", r.Agent, r.ActionID, first)
		}
		return nil
	})
	sdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	if refused["alice"] != 3 || refused["demo-agent"] != 1 || refused["senior-bot"] != 1 || refused[""] != 1 {
		t.Fatalf("refused sign-ins in the audit trail per name: %v; want alice 3 (none, wrong, token of bob), demo-agent 1, senior-bot 1, a forged token 1", refused)
	}
	// The store moved exactly the approved refund.
	s, _, _, err := openStore(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, err := s.Order(ctx, "ord_1002")
	if err != nil {
		t.Fatal(err)
	}
	if o.Refunded.String() != "150.00" {
		t.Fatalf("ord_1002 refunded %s, want 150.00", o.Refunded)
	}
}

func TestAdminUserAdd(t *testing.T) {
	db := filepath.Join(t.TempDir(), "mandate.db")
	tests := []struct {
		name    string
		stdin   string
		args    []string
		wantErr string
	}{
		{name: "add", stdin: "correct horse battery\n", args: []string{"alice"}},
		{name: "exists", stdin: "another good password\n", args: []string{"alice"}, wantErr: "exists"},
		{name: "short password", stdin: "short\n", args: []string{"bob"}, wantErr: "at least 12"},
		{name: "ten a's", stdin: "aaaaaaaaaa\n", args: []string{"bob"}, wantErr: "at least 12"},
		{name: "twelve a's", stdin: "aaaaaaaaaaaa\n", args: []string{"bob"}, wantErr: "common"},
		{name: "common password", stdin: "Password1234\n", args: []string{"bob"}, wantErr: "common"},
		{name: "no name", stdin: "long enough password\n", wantErr: "name"},
		{name: "space in the name", stdin: "long enough password\n", args: []string{"bo b"}, wantErr: "invisible"},
		{name: "Cyrillic a", stdin: "long enough password\n", args: []string{"\u0430lice"}, wantErr: "looks like"},
		{name: "confusable with an identity", stdin: "long enough password\n", args: []string{"ALICE"}, wantErr: "mistaken for"},
		{name: "markup", stdin: "long enough password\n", args: []string{"<b>bob</b>"}, wantErr: "<"},
		{name: "an agent", stdin: "long enough password\n", args: []string{"demo-agent"}, wantErr: "agent"},
		{name: "not in the policy", stdin: "long enough password\n", args: []string{"mallory"}, wantErr: "not an identity"},
		{name: "a role", stdin: "long enough password\n", args: []string{"supervisor"}, wantErr: "not an identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("MANDATE_ADMIN_PASSWORD", "")
			out, err := runCLI(t, tt.stdin, append([]string{"admin", "user", "add", "--db", db}, tt.args...)...)
			if tt.wantErr == "" {
				if err != nil || !strings.Contains(out, "added") {
					t.Fatalf("err %v, output %q", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one mentioning %q", err, tt.wantErr)
			}
			var ue usageError
			if !errors.As(err, &ue) && tt.wantErr != "exists" {
				t.Fatalf("error %v is not a usage error", err)
			}
		})
	}
	// An auditor approves nothing: the message must not say the approve_*
	// rules set what carol may approve.
	pol := filepath.Join(t.TempDir(), "policy.csv")
	shipped, err := os.ReadFile(polPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pol, append(shipped, "g, carol, auditor\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "another good password\n", "admin", "user", "add", "carol", "--db", filepath.Join(t.TempDir(), "m.db"), "--model", polModel, "--policy", pol)
	if err != nil || !strings.Contains(out, "(auditor)") || strings.Contains(out, "approve_*") || !strings.Contains(out, "approve nothing") {
		t.Fatalf("admin user add for an auditor: %v\n%s", err, out)
	}
	sdb, err := storage.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	u, err := sdb.User(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.PasswordHash, "$2a$") || strings.Contains(u.PasswordHash, "correct horse") {
		t.Fatalf("stored password %q is not a bcrypt hash", u.PasswordHash)
	}
}

func TestAdminUserLifecycle(t *testing.T) {
	db := filepath.Join(t.TempDir(), "mandate.db")
	t.Setenv("MANDATE_ADMIN_PASSWORD", "")
	if _, err := runCLI(t, cliPassword+"\n", "admin", "user", "add", "bob", "--db", db); err != nil {
		t.Fatal(err)
	}
	sdb, err := storage.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, _, err := sdb.CreateSession(ctx, "bob", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		stdin   string
		current string // bob's current password, as MANDATE_ADMIN_CURRENT_PASSWORD; "" unset
		args    []string
		want    string
		err     string
	}{
		{name: "one session: a new login ended the older", args: []string{"sessions", "bob"}, want: "EXPIRES"},
		{name: "revoke", args: []string{"sessions", "bob", "--revoke"}, want: "ended 1 session"},
		{name: "none left", args: []string{"sessions", "bob"}, want: "no live sessions"},
		{name: "passwd without the current password", stdin: "another-fine-sentence-7\n", args: []string{"passwd", "bob"}, err: "prove you are bob"},
		{name: "passwd with a wrong current password", stdin: "another-fine-sentence-7\n", current: "not-bobs-password-1", args: []string{"passwd", "bob"}, err: "do not match"},
		{name: "weak new password", stdin: "bob\n", current: cliPassword, args: []string{"passwd", "bob"}, err: "at least 12"},
		{name: "new password", stdin: "another-fine-sentence-7\n", current: cliPassword, args: []string{"passwd", "bob"}, want: "changed the password of bob"},
		{name: "token without the password", args: []string{"token", "bob"}, err: "prove you are bob"},
		{name: "token with the old password", current: cliPassword, args: []string{"token", "bob"}, err: "do not match"},
		{name: "token", current: "another-fine-sentence-7", args: []string{"token", "bob"}, want: "mdt_"},
		{name: "token for nobody", args: []string{"token", "nobody"}, err: "no user"},
		{name: "remove", args: []string{"remove", "bob"}, want: "removed bob"},
		{name: "remove again", args: []string{"remove", "bob"}, err: "no user"},
		{name: "unknown subcommand", args: []string{"purge", "bob"}, err: "unknown subcommand"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.current != "" {
				t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", st.current)
			} else {
				os.Unsetenv("MANDATE_ADMIN_CURRENT_PASSWORD")
			}
			out, err := runCLI(t, st.stdin, append(append([]string{"admin", "user"}, st.args...), "--db", db)...)
			if st.err != "" {
				if err == nil || !strings.Contains(err.Error(), st.err) {
					t.Fatalf("error %v, want %q", err, st.err)
				}
				return
			}
			if err != nil || !strings.Contains(out, st.want) {
				t.Fatalf("err %v, output %q, want %q", err, out, st.want)
			}
		})
	}
	if _, err := sdb.TokenUser(ctx, "anything"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("token lookup after removal: %v", err)
	}
}

// TestAdminUserList: admin user list shows every user with the role the
// live policy gives them (not the one in the files the CLI was pointed
// at), whether a CLI token is set and their open sessions, and never a
// password hash or token.
func TestAdminUserList(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "mandate.db")
	if out, err := runCLI(t, "", "admin", "user", "list", "--db", db); err == nil {
		t.Fatalf("list without a database: %s, want an error", out)
	}
	addUsers(t, db, "bob", "alice", "carol", "demo-agent")
	live := recordLive(t, db, writePolicy(t, dir, "\ng, carol, auditor\n"), "admin start")
	sdb, err := storage.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if _, _, err := sdb.CreateSession(ctx, "bob", time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", cliPassword)
	tok, err := runCLI(t, "", "admin", "user", "token", "alice", "--db", db)
	if err != nil {
		t.Fatal(tok, err)
	}
	// Files that make alice an auditor and carol nothing: not live, so
	// not what the list shows.
	other := writePolicy(t, t.TempDir(), "\ng, dave, auditor\n")
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"admin", "user", "list", "--db", db, "--policy", other}, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatal(err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"NAME", "ROLE", "CREATED", "CLI TOKEN", "SESSIONS"},
		{"alice", "approver", "set", "0"},
		{"bob", "approver", "-", "1"},
		{"carol", "auditor", "-", "0"},
		{"demo-agent", "none (cannot sign in)", "-", "0"},
	}
	if len(lines) != len(want) {
		t.Fatalf("admin user list:\n%s\nwant %d lines", out.String(), len(want))
	}
	for i, w := range want {
		for _, f := range w {
			if !strings.Contains(lines[i], f) {
				t.Errorf("line %d %q lacks %q", i, lines[i], f)
			}
		}
	}
	if !strings.Contains(errOut.String(), "roles under the live policy, version "+live) {
		t.Errorf("stderr %q, want it to name the live version %s", errOut.String(), live)
	}
	if secret := strings.Fields(tok)[0]; strings.Contains(out.String(), "$2a$") || strings.Contains(out.String(), secret[4:16]) {
		t.Fatalf("the list shows a hash or token:\n%s", out.String())
	}
}

// TestAdminUserForgottenPassword: the route for a forgotten password is
// remove then add, as admin user -h says (passwd needs the current one).
// It ends the old CLI token, and the new password proves who they are.
func TestAdminUserForgottenPassword(t *testing.T) {
	db := filepath.Join(t.TempDir(), "mandate.db")
	if help, err := runCLI(t, "", "admin", "user", "-h"); err != nil || !strings.Contains(help, "forgotten password has no reset: remove NAME, then add NAME again") {
		t.Fatalf("admin user -h: %v\n%s\nwant the route for a forgotten password", err, help)
	}
	addUsers(t, db, "bob")
	t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", cliPassword)
	tok, err := runCLI(t, "", "admin", "user", "token", "bob", "--db", db)
	if err != nil {
		t.Fatal(tok, err)
	}
	t.Setenv("MANDATE_ADMIN_PASSWORD", "")
	if out, err := runCLI(t, "", "admin", "user", "remove", "bob", "--db", db); err != nil {
		t.Fatal(out, err)
	}
	if out, err := runCLI(t, "another-fine-sentence-7\n", "admin", "user", "add", "bob", "--db", db); err != nil {
		t.Fatal(out, err)
	}
	sdb, err := storage.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if _, err := sdb.TokenUser(context.Background(), strings.Fields(tok)[0]); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Fatalf("the old token after remove and add: %v, want not_found", err)
	}
	if _, err := runCLI(t, "", "admin", "user", "token", "bob", "--db", db); err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Fatalf("the old password after remove and add: %v, want refused", err)
	}
	t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", "another-fine-sentence-7")
	if out, err := runCLI(t, "", "admin", "user", "token", "bob", "--db", db); err != nil || !strings.Contains(out, "mdt_") {
		t.Fatalf("the new password: %v\n%s", err, out)
	}
}

// TestAdminUserKeyedTrail: on a trail keyed with an audit key, admin user
// passwd and token take the key (--audit-key or MANDATE_AUDIT_KEY), as
// their failed sign-ins are audit records. Without it they say which flag
// or variable is missing, not that the database is unavailable, before
// checking any password, and write nothing; with it a wrong password is
// refused and audited, and a right one works.
func TestAdminUserKeyedTrail(t *testing.T) {
	ctx := context.Background()
	t.Setenv("MANDATE_AUDIT_KEY", "")
	t.Setenv("MANDATE_ADMIN_PASSWORD", "")
	dir := t.TempDir()
	db, auditKey := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "audit.key")
	if out, err := runCLI(t, "", "audit", "mackey", "--out", auditKey); err != nil {
		t.Fatal(out, err)
	}
	addUsers(t, db, "bob")                                                                                                  // its record is the trail's first, before any is keyed
	if out, err := runCLI(t, "", "agent", "key", "create", "demo-agent", "--audit-key", auditKey, "--db", db); err != nil { // a keyed record
		t.Fatal(out, err)
	}
	loginRecords := func() int {
		t.Helper()
		sdb, err := storage.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		n := 0
		if err := sdb.Records(ctx, storage.Filter{Tool: auth.LoginTool}, func(*storage.Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", "not-bobs-password-1")
	for _, cmd := range []string{"token", "passwd"} {
		out, err := runCLI(t, "another-fine-sentence-7\n", "admin", "user", cmd, "bob", "--db", db)
		if err == nil || !strings.Contains(err.Error(), "no audit key was given: pass --audit-key FILE or set MANDATE_AUDIT_KEY") ||
			strings.Contains(err.Error(), "unavailable") {
			t.Fatalf("%s without the audit key: %v\n%s\nwant a refusal naming --audit-key and MANDATE_AUDIT_KEY", cmd, err, out)
		}
		out, err = runCLI(t, "another-fine-sentence-7\n", "admin", "user", cmd, "bob", "--audit-key", auditKey, "--db", db)
		if err == nil || !strings.Contains(err.Error(), "do not match") {
			t.Fatalf("%s with the key and a wrong password: %v\n%s", cmd, err, out)
		}
	}
	if n := loginRecords(); n != 2 {
		t.Fatalf("%d admin_login records, want the 2 wrong passwords given with the key", n)
	}

	t.Setenv("MANDATE_ADMIN_CURRENT_PASSWORD", cliPassword)
	t.Setenv("MANDATE_AUDIT_KEY", auditKey)
	if out, err := runCLI(t, "", "admin", "user", "token", "bob", "--db", db); err != nil || !strings.Contains(out, "mdt_") {
		t.Fatalf("token with MANDATE_AUDIT_KEY: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "another-fine-sentence-7\n", "admin", "user", "passwd", "bob", "--db", db); err != nil || !strings.Contains(out, "changed the password of bob") {
		t.Fatalf("passwd with MANDATE_AUDIT_KEY: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "", "audit", "verify", "--db", db); err != nil || !strings.HasPrefix(out, "intact (keyed from seq 2)") {
		t.Fatalf("audit verify: %v\n%s", err, out) // record 1, bob's addition, predates the key
	}
}

// TestApprovalsCLIRefusesAuditor: an auditor signs in from the CLI but may
// not decide. The refusal is an admin_access record in the action's
// lineage; when the trail cannot take it, the CLI says so and still
// refuses.
func TestApprovalsCLIRefusesAuditor(t *testing.T) {
	for _, broken := range []bool{false, true} {
		t.Run(map[bool]string{false: "recorded", true: "trail unwritable"}[broken], func(t *testing.T) {
			db, st, ids := approvalFiles(t, "150.00")
			pol := writePolicy(t, t.TempDir(), "\ng, carol, auditor\n")
			recordLive(t, db, pol, "admin reload")
			signIn(t, db, "carol")
			if broken {
				breakAudit(t, db)
			}
			out, err := runCLI(t, "", "approvals", "approve", ids[0], "--as", "carol", "--db", db, "--store", st, "--policy", pol)
			want := "carol is an auditor and may not decide actions"
			if broken {
				want += ", and the refusal could not be recorded in the audit trail"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("approve as carol: %v\n%s\nwant a refusal saying %q", err, out, want)
			}
			ctx := context.Background()
			sdb, err := storage.Open(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			defer sdb.Close()
			if a, err := sdb.Action(ctx, ids[0]); err != nil || a.Status != storage.StatusPending {
				t.Fatalf("action after the refusal: %+v, %v; want it still pending", a, err)
			}
			var recs []*storage.Record
			if err := sdb.Records(ctx, storage.Filter{Tool: "admin_access", ActionID: ids[0]}, func(r *storage.Record) error {
				recs = append(recs, r)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if broken {
				if len(recs) != 0 {
					t.Fatalf("records written past the broken trail: %+v", recs)
				}
				return
			}
			if len(recs) != 1 || recs[0].Agent != "carol" || recs[0].Decision != policy.Deny || recs[0].Error != "carol is an auditor and may not decide actions" ||
				!strings.Contains(string(recs[0].Args), `"via":"cli"`) {
				t.Fatalf("refusal records %+v, want one of carol refused from the CLI", recs)
			}
		})
	}
}

// breakAudit makes the audit trail at path (a SQLite file) refuse every new
// record the way a full disk would, while the database stays readable.
func breakAudit(t *testing.T, path string) {
	t.Helper()
	raw, err := sql.Open("sqlite", storage.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit
		BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}
}

// TestAdminUserChangesAudited: adding and removing an approver are audit
// records (who became or stopped being one, and when), written with the
// change; on a keyed trail, add without the key says which flag is
// missing before asking for a password, and adds nobody.
func TestAdminUserChangesAudited(t *testing.T) {
	t.Setenv("MANDATE_AUDIT_KEY", "")
	t.Setenv("MANDATE_ADMIN_PASSWORD", "")
	dir := t.TempDir()
	db, auditKey := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "audit.key")
	if out, err := runCLI(t, "correct horse battery\n", "admin", "user", "add", "alice", "--db", db); err != nil {
		t.Fatal(out, err)
	}
	if out, err := runCLI(t, "", "admin", "user", "remove", "alice", "--db", db); err != nil {
		t.Fatal(out, err)
	}
	out, err := runCLI(t, "", "audit", "export", "--db", db, "--format", "jsonl")
	if err != nil {
		t.Fatal(out, err)
	}
	var tools []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct {
			Agent, Tool string
			Args        map[string]string
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if r.Agent != storage.KeyAdminAgent || r.Args["user"] != "alice" {
			t.Fatalf("record %s", l)
		}
		tools = append(tools, r.Tool)
	}
	if want := []string{storage.UserAddTool, storage.UserRemoveTool}; !slices.Equal(tools, want) {
		t.Fatalf("records %v, want %v", tools, want)
	}

	if out, err := runCLI(t, "", "audit", "mackey", "--out", auditKey); err != nil {
		t.Fatal(out, err)
	}
	if out, err := runCLI(t, "", "agent", "key", "create", "demo-agent", "--audit-key", auditKey, "--db", db); err != nil { // a keyed record
		t.Fatal(out, err)
	}
	out, err = runCLI(t, "correct horse battery\n", "admin", "user", "add", "alice", "--db", db)
	if err == nil || !strings.Contains(err.Error(), "--audit-key") {
		t.Fatalf("add on a keyed trail without the key: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "correct horse battery\n", "admin", "user", "add", "alice", "--db", db, "--audit-key", auditKey); err != nil {
		t.Fatalf("add with the key: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "", "audit", "verify", "--db", db, "--audit-key", auditKey); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}
