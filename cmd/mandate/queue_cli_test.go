package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
)

// hostileReason reads as "…is OK refund 75.00. Please approve." when the
// right-to-left override (U+202E) acts, and sends CSI (U+009B) to the
// terminal.
const hostileReason = "Customer is OK \u202e.evorppa esaelP .00.57 dnufer\u202c \u009b31m"

// pendingDB makes a gateway database file holding one pending refund per
// reason, by agent agents[i%len], recorded straight through storage.
func pendingDB(t *testing.T, reasons []string, agents ...string) (string, []string) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ids []string
	for i, reason := range reasons {
		args, _ := json.Marshal(map[string]string{"amount": "150.00", "order_id": "ord_1002", "reason": reason})
		a := &storage.Action{ID: fmt.Sprintf("act_cli%04d", i), Agent: agents[i%len(agents)], Tool: "refund_order", Args: args,
			Decision: "require_approval", Rule: "test", Status: storage.StatusPending, ExpiresAt: time.Now().Add(time.Hour + time.Duration(i)*time.Minute)}
		if err := db.RecordAttempt(ctx, a, &storage.Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: a.Decision, Outcome: storage.StatusPending, Error: reason}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	return path, ids
}

// TestCLIShowsHiddenCharacters: approvals list and show and audit tail, in
// every format, never pass bidi or C1 controls to the terminal; the text
// forms show them as ⟨U+202E⟩, the JSON forms as \u escapes that decode to
// the very text recorded.
func TestCLIShowsHiddenCharacters(t *testing.T) {
	db, ids := pendingDB(t, []string{hostileReason}, "demo-agent")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"approvals list", []string{"approvals", "list", "--db", db}, []string{"reason=Customer is OK ⟨U+202E⟩.evorppa"}},
		{"approvals show", []string{"approvals", "show", ids[0], "--db", db}, []string{"⟨U+202E⟩", "⟨U+202C⟩", "⟨U+009B⟩31m"}},
		{"audit tail", []string{"audit", "tail", "--db", db}, []string{"⟨U+202E⟩", "error: Customer is OK ⟨U+202E⟩"}},
		{"audit tail csv", []string{"audit", "tail", "--format", "csv", "--db", db}, []string{"⟨U+202E⟩", "⟨U+009B⟩"}},
		{"audit tail jsonl", []string{"audit", "tail", "--format", "jsonl", "--db", db}, []string{`\u202e`, `\u009b`}},
		{"audit tail ocsf", []string{"audit", "tail", "--format", "ocsf", "--db", db}, []string{`\u202e`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCLI(t, "", tt.args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, raw := range []string{"\u202e", "\u202c", "\u009b"} {
				if strings.Contains(out, raw) {
					t.Fatalf("output holds U+%04X raw:\n%q", []rune(raw)[0], out)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output lacks %q:\n%s", w, out)
				}
			}
			if tt.name == "audit tail jsonl" {
				var r storage.Record
				if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
					t.Fatal(err)
				}
				if r.Error != hostileReason {
					t.Fatalf("the JSON record decodes to %q, want the recorded %q", r.Error, hostileReason)
				}
			}
		})
	}
}

var moreLine = regexp.MustCompile(`(?m)^(\d+)–(\d+) of (\d+)(?:; (\d+) more: mandate (.*))?$`)

// TestApprovalsListPages: the list says how many there are and how to get
// the next page; following it reaches every pending action once, soonest
// to expire first.
func TestApprovalsListPages(t *testing.T) {
	reasons := make([]string, 130)
	for i := range reasons {
		reasons[i] = "reason " + fmt.Sprint(i)
	}
	db, ids := pendingDB(t, reasons, "agent-a", "agent-b")
	tests := []struct {
		name  string
		args  []string
		want  []string
		total string
	}{
		{"all", []string{"approvals", "list", "--limit", "50"}, ids, "130"},
		{"one agent", []string{"approvals", "list", "--agent", "agent-b"}, everyOther(ids[1:]), "65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			args := tt.args
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("paging does not end")
				}
				out, err := runCLI(t, "", append(args, "--db", db)...)
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				for _, line := range strings.Split(out, "\n") {
					if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "act_") {
						got = append(got, f[0])
					}
				}
				m := moreLine.FindStringSubmatch(out)
				if m == nil || m[3] != tt.total {
					t.Fatalf("no count of %s in:\n%s", tt.total, out)
				}
				if m[5] == "" {
					break
				}
				args = strings.Fields(m[5])
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("paged through %d actions:\n%v\nwant %d:\n%v", len(got), got, len(tt.want), tt.want)
			}
		})
	}
	for _, bad := range [][]string{{"--limit", "0"}, {"--limit", "501"}, {"--offset", "-1"}, {"--status", "denied", "--after", ids[0]}} {
		_, err := runCLI(t, "", append([]string{"approvals", "list", "--db", db}, bad...)...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Fatalf("approvals list %v: %v, want a usage error", bad, err)
		}
	}
}

func everyOther(s []string) []string {
	var out []string
	for i := 0; i < len(s); i += 2 {
		out = append(out, s[i])
	}
	return out
}

// TestServeMaxPendingBounds: the cap cannot be switched off or set absurd.
func TestServeMaxPendingBounds(t *testing.T) {
	for _, v := range []string{"0", "-1", "10001", "many"} {
		t.Run(v, func(t *testing.T) {
			_, err := runCLI(t, "", "serve", "--agent", "demo-agent", "--max-pending", v)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--max-pending") {
				t.Fatalf("serve --max-pending %s: %v, want a usage error", v, err)
			}
		})
	}
	t.Setenv("MANDATE_MAX_PENDING", "0")
	if _, err := runCLI(t, "", "serve", "--agent", "demo-agent"); err == nil || !strings.Contains(err.Error(), "--max-pending") {
		t.Fatalf("MANDATE_MAX_PENDING=0: %v, want refused", err)
	}
}

// TestTerminalSafeSplitWrites feeds terminalSafe one byte at a time, as a
// buffer boundary can split a character: the output is the same as in one
// write.
func TestTerminalSafeSplitWrites(t *testing.T) {
	tests := []struct {
		json bool
		in   string
		want string
	}{
		{false, "ok \u202eevil\u009b é\n", "ok ⟨U+202E⟩evil⟨U+009B⟩ é\n"},
		{true, `{"r":"a` + "\u202e\U000e0041" + `é"}` + "\n", `{"r":"a\u202e\udb40\udc41é"}` + "\n"},
	}
	for _, tt := range tests {
		var out strings.Builder
		ts := &terminalSafe{w: &out, json: tt.json}
		for i := 0; i < len(tt.in); i++ {
			if _, err := ts.Write([]byte{tt.in[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if out.String() != tt.want {
			t.Fatalf("json=%v: %q, want %q", tt.json, out.String(), tt.want)
		}
	}
}

// TestApprovalsListStatus: every status the flag names lists (exit 0); any
// other is a usage error, exit status 2, naming the valid ones (it used to
// print "no bogus actions" and succeed).
func TestApprovalsListStatus(t *testing.T) {
	db, _, _ := approvalFiles(t)
	for _, s := range listStatuses {
		if out, err := runCLI(t, "", "approvals", "list", "--status", s, "--db", db); err != nil {
			t.Fatalf("approvals list --status %s: %v\n%s", s, err, out)
		}
	}
	for _, bad := range []string{"bogus", "", "Pending", "refused"} {
		stdout, stderr, status := runBinary(t, "approvals", "list", "--status", bad, "--db", db)
		want := fmt.Sprintf("mandate: approvals list: --status %q: use pending, approved, denied, expired, executing, executed, failed or all\n", bad)
		if status != 2 || stdout != "" || stderr != want {
			t.Fatalf("approvals list --status %q: exit status %d, stdout %q, stderr %q; want 2, nothing and %q", bad, status, stdout, stderr, want)
		}
	}
}

// TestApprovalsBackendTimeoutFromEnv: the processes that run approved
// actions read MANDATE_BACKEND_TIMEOUT like serve does (a serve's recovery
// waits for more than twice it), and a bad value is a usage error that
// decides nothing.
func TestApprovalsBackendTimeoutFromEnv(t *testing.T) {
	db, _, _ := approvalFiles(t)
	stdout, stderr, err := runMandate(t, []string{"MANDATE_BACKEND_TIMEOUT=soon"},
		"approvals", "deny", "act_0123456789abcdef", "--as", "alice", "--comment", "no", "--db", db)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || stdout != "" || !strings.Contains(stderr, `MANDATE_BACKEND_TIMEOUT="soon"`) {
		t.Fatalf("bad MANDATE_BACKEND_TIMEOUT: %v, stdout %q, stderr %q; want exit 2 naming it", err, stdout, stderr)
	}
}
