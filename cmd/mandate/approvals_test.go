package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// approvalFiles makes a gateway database and a demo store in a temporary
// directory and asks for a refund of amount on ord_1002 as demo-agent
// through the real guard, in process; it returns the paths and the pending
// action's id.
func approvalFiles(t *testing.T, amounts ...string) (dbPath, storePath string, ids []string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	dbPath, storePath = filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// As `mandate serve` does at start: the embedded policy is the live one.
	if err := db.RecordPolicy(ctx, policyLoad(pol, policy.Source{Name: "embedded model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "embedded policy.csv", Data: mandate.DefaultPolicy}, "serve start", "demo-agent")); err != nil {
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

func TestApprovalsCLI(t *testing.T) {
	db, st, ids := approvalFiles(t, "150.00", "120.00")
	first, second := ids[0], ids[1]
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		usage   bool     // the error is a usage error (exit status 2)
		want    []string // substrings of the output or error
		not     []string // substrings that must not appear
	}{
		{name: "list pending", args: []string{"approvals", "list", "--db", db},
			want: []string{first, second, "pending", "demo-agent", "refund_order", "amount=150.00"}, not: []string{"\nsecond line"}},
		{name: "requester cannot approve", args: []string{"approvals", "approve", first, "--as", "demo-agent", "--db", db, "--store", st},
			wantErr: true, want: []string{"demo-agent cannot decide"}},
		{name: "an agent is no approver", args: []string{"approvals", "approve", first, "--as", "senior-bot", "--db", db, "--store", st},
			wantErr: true, want: []string{"do not let senior-bot decide"}},
		{name: "deny needs a comment", args: []string{"approvals", "deny", second, "--as", "bob", "--db", db, "--store", st},
			wantErr: true, usage: true, want: []string{"--comment"}},
		{name: "approve needs --as", args: []string{"approvals", "approve", first, "--db", db, "--store", st},
			wantErr: true, usage: true, want: []string{"--as"}},
		{name: "approve executes", args: []string{"approvals", "approve", first, "--as", "alice", "--comment", "goodwill", "--db", db, "--store", st},
			want: []string{first, "approved by alice and executed", `"amount":"150.00"`}},
		{name: "approve again is refused", args: []string{"approvals", "approve", "--as", "bob", "--db", db, "--store", st, first},
			wantErr: true, want: []string{"executed, not pending"}},
		{name: "deny with comment", args: []string{"approvals", "deny", second, "--as", "bob", "--comment", "already refunded by phone", "--db", db, "--store", st},
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
	// The store moved exactly the approved refund.
	ctx := context.Background()
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
		{name: "exists", stdin: "another password\n", args: []string{"alice"}, wantErr: "exists"},
		{name: "short password", stdin: "short\n", args: []string{"bob"}, wantErr: "at least"},
		{name: "no name", stdin: "long enough password\n", wantErr: "name"},
		{name: "bad name", stdin: "long enough password\n", args: []string{"bo b"}, wantErr: "without spaces"},
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
		})
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
