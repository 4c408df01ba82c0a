package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// commands is every command and subcommand, and every group of them; a new
// one belongs here, so that the table below checks how it answers.
var (
	commands = [][]string{
		{"serve"}, {"demo"}, {"init"}, {"version"}, {"lineage"}, {"remediate"},
		{"store", "import"}, {"storage", "migrate"},
		{"policy", "check"}, {"policy", "explain"}, {"policy", "test"}, {"policy", "replay"},
		{"approvals", "list"}, {"approvals", "show"}, {"approvals", "approve"}, {"approvals", "deny"},
		{"audit", "verify"}, {"audit", "export"}, {"audit", "tail"}, {"audit", "mackey"},
		{"audit", "keygen"}, {"audit", "checkpoint"}, {"audit", "prove"}, {"audit", "verify-proof"},
		{"admin"}, {"admin", "user", "add"}, {"admin", "user", "list"}, {"admin", "user", "remove"}, {"admin", "user", "passwd"},
		{"admin", "user", "sessions"}, {"admin", "user", "token"},
		{"rates", "show"}, {"rates", "set"},
		{"store", "serve"}, {"backend", "check"},
		{"agent", "key", "create"}, {"agent", "key", "list"}, {"agent", "key", "revoke"},
		{"agent", "suspend"}, {"agent", "resume"}, {"agent", "suspensions"},
	}
	groups = [][]string{{"policy"}, {"approvals"}, {"audit"}, {"store"}, {"storage"}, {"admin", "user"}, {"rates"}, {"backend"}, {"agent"}, {"agent", "key"}}
)

// runInProcess runs mandate in process, as main does, and returns what it wrote
// and its exit status.
func runInProcess(args ...string) (stdout, stderr string, status int) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, new(usageError)):
		return out.String(), errOut.String() + "mandate: " + err.Error() + "\n", 2
	}
	return out.String(), errOut.String() + "mandate: " + err.Error() + "\n", 1
}

// runBinary runs the built binary and returns the same.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	stdout, stderr, err := runMandate(t, nil, args...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout, stderr, 0
	case errors.As(err, &exit):
		return stdout, stderr, exit.ExitCode()
	}
	t.Fatalf("mandate %v: %v", args, err)
	return "", "", 0
}

// TestHelpAndFlagMistakes: every command and group answers -h and --help
// alike, with its usage on stdout and exit status 0, and an unknown flag
// with exit status 2 and the usage once on stderr, in process and as the
// built binary.
func TestHelpAndFlagMistakes(t *testing.T) {
	t.Parallel()
	type runner func(args ...string) (string, string, int)
	runners := map[string]runner{
		"run":    runInProcess,
		"binary": func(args ...string) (string, string, int) { return runBinary(t, args...) },
	}
	for _, cmd := range append(append([][]string{}, commands...), groups...) {
		name := strings.Join(cmd, " ")
		for how, do := range runners {
			var help string
			for _, flag := range []string{"-h", "--help"} {
				stdout, stderr, status := do(append(cmd[:len(cmd):len(cmd)], flag)...)
				if status != 0 || stderr != "" {
					t.Fatalf("%s: mandate %s %s: exit status %d, stderr %q; want 0 and nothing", how, name, flag, status, stderr)
				}
				if !strings.Contains(stdout, "Usage:") || !strings.Contains(stdout, "mandate "+name) {
					t.Fatalf("%s: mandate %s %s printed %q, want its usage", how, name, flag, stdout)
				}
				if help == "" {
					help = stdout
				} else if stdout != help {
					t.Fatalf("%s: mandate %s: -h and --help differ:\n%s\n---\n%s", how, name, help, stdout)
				}
			}
			stdout, stderr, status := do(append(cmd[:len(cmd):len(cmd)], "--no-such-flag")...)
			if status != 2 || stdout != "" {
				t.Fatalf("%s: mandate %s --no-such-flag: exit status %d, stdout %q; want 2 and nothing", how, name, status, stdout)
			}
			if n := strings.Count(stderr, "Usage:"); n != 1 {
				t.Fatalf("%s: mandate %s --no-such-flag printed the usage %d times:\n%s", how, name, n, stderr)
			}
			if !strings.Contains(stderr, "no-such-flag") {
				t.Fatalf("%s: mandate %s --no-such-flag does not say what was wrong:\n%s", how, name, stderr)
			}
		}
	}
}

// TestTopLevelUsageListsEveryCommand keeps `mandate help` complete.
func TestTopLevelUsageListsEveryCommand(t *testing.T) {
	stdout, _, status := runInProcess("--help")
	if status != 0 {
		t.Fatalf("mandate --help: exit status %d", status)
	}
	for _, cmd := range commands {
		if !strings.Contains(stdout, "mandate "+strings.Join(cmd, " ")) {
			t.Errorf("the usage does not list `mandate %s`:\n%s", strings.Join(cmd, " "), stdout)
		}
	}
	if _, stderr, status := runInProcess(); status != 2 || !strings.Contains(stderr, "mandate audit tail") {
		t.Fatalf("mandate with no command: exit status %d, stderr %q; want 2 and the usage", status, stderr)
	}
}

// TestDurationsMustBePositive: a zero, negative or unparsable duration, on
// the command line or in the environment, is a usage error naming the flag
// or variable, never a silent 24 h.
func TestDurationsMustBePositive(t *testing.T) {
	dir := t.TempDir()
	files := []string{"--agent", "demo-agent", "--db", filepath.Join(dir, "mandate.db"), "--store", filepath.Join(dir, "store.db")}
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"zero ttl", nil, []string{"--approval-ttl", "0s"}, `invalid value "0s" for flag -approval-ttl: must be longer than 0`},
		{"negative ttl", nil, []string{"--approval-ttl", "-1h"}, `invalid value "-1h" for flag -approval-ttl: must be longer than 0`},
		{"unparsable ttl", nil, []string{"--approval-ttl", "1 day"}, `invalid value "1 day" for flag -approval-ttl: not a duration`},
		{"zero backend timeout", nil, []string{"--backend-timeout", "0"}, `flag -backend-timeout: must be longer than 0`},
		{"negative recovery", nil, []string{"--recover-after", "-30s"}, `flag -recover-after: must be longer than 0`},
		{"unparsable env", []string{"MANDATE_APPROVAL_TTL=soon"}, nil, `MANDATE_APPROVAL_TTL="soon" (the default of --approval-ttl): not a duration`},
		{"zero env", []string{"MANDATE_BACKEND_TIMEOUT=0s"}, nil, `MANDATE_BACKEND_TIMEOUT="0s" (the default of --backend-timeout): must be longer than 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runMandate(t, tt.env, append(append([]string{"serve"}, files...), tt.args...)...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit: %v, want status 2; stderr %s", err, stderr)
			}
			if stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Fatalf("stdout %q, stderr %q; want %q", stdout, stderr, tt.want)
			}
		})
	}
	// The command line wins over a bad variable.
	t.Setenv("MANDATE_APPROVAL_TTL", "soon")
	fs := newFlags("serve", "mandate serve", new(bytes.Buffer))
	ttl := durationFlag(fs, "approval-ttl", "MANDATE_APPROVAL_TTL", 0, "ttl")
	if err := parseFlags(fs, []string{"--approval-ttl", "2h"}, 0); err != nil || ttl.Hours() != 2 {
		t.Fatalf("--approval-ttl 2h over MANDATE_APPROVAL_TTL=soon: %v, %v", *ttl, err)
	}
}

// TestPolicyCheckStopsWhenCancelled: SIGINT and SIGTERM cancel run's
// context (main's signal.NotifyContext); `policy check` of a large policy
// then stops with an error (exit status 1) instead of running on. Loading
// 100,000 lines takes far longer than the 50 ms before the cancel.
func TestPolicyCheckStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 50000 {
		fmt.Fprintf(&b, "p, team%d, refund_order, amount <= %d.00, allow\ng, agent%d, team%d\n", i, i+1, i, i)
	}
	path := filepath.Join(t.TempDir(), "large.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"policy", "check", "--policy", path}, strings.NewReader(""), &out, &errOut)
	if err == nil || !errors.Is(err, context.Canceled) || errors.As(err, new(usageError)) {
		t.Fatalf("policy check cancelled: err %v, want context.Canceled (exit status 1); stdout %q", err, out.String())
	}
	if !strings.Contains(err.Error(), "policy check: stopped before the end") {
		t.Fatalf("the error does not say check stopped: %v", err)
	}
}

// TestUsageHidesDatabasePassword: with MANDATE_DB a URL with a password,
// no command's usage (-h on stdout, a flag mistake on stderr) shows the
// password; the default shown is the redacted URL.
func TestUsageHidesDatabasePassword(t *testing.T) {
	const secret = "s3cret-in-env"
	t.Setenv("MANDATE_DB", "postgres://mandate_app:"+secret+"@127.0.0.1:1/mandate?sslmode=disable")
	shown := false
	for _, cmd := range commands {
		name := strings.Join(cmd, " ")
		for _, flag := range []string{"-h", "--no-such-flag"} {
			stdout, stderr, _ := runInProcess(append(cmd[:len(cmd):len(cmd)], flag)...)
			if strings.Contains(stdout+stderr, secret) {
				t.Fatalf("mandate %s %s shows the database password:\n%s%s", name, flag, stdout, stderr)
			}
			shown = shown || strings.Contains(stdout+stderr, "postgres://mandate_app:xxxxx@127.0.0.1:1/mandate")
		}
	}
	if !shown {
		t.Fatal("no usage shows the redacted MANDATE_DB default; the test no longer looks where the password was")
	}
}

// TestUsageAndErrorsHideWebhookSecrets: a webhook's or checkpoint
// receiver's URL may carry its credential in its path or query (a Slack
// incoming webhook's path is one), so serve's usage shows an env default of
// either as its scheme and host only, and a bad one is refused at start
// (exit 2) without repeating it.
func TestUsageAndErrorsHideWebhookSecrets(t *testing.T) {
	const secret = "T0-B0-SECRETPATH"
	t.Setenv("MANDATE_NOTIFY_URL", "https://hooks.example.com/services/"+secret)
	t.Setenv("MANDATE_CHECKPOINT_URL", "https://receiver.example.com/ingest?token="+secret)
	stdout, stderr, _ := runInProcess("serve", "-h")
	if strings.Contains(stdout+stderr, secret) || !strings.Contains(stdout+stderr, "https://hooks.example.com/…") || !strings.Contains(stdout+stderr, "https://receiver.example.com/…") {
		t.Fatalf("serve -h:\n%s%s", stdout, stderr)
	}
	t.Setenv("MANDATE_CHECKPOINT_URL", "")
	t.Setenv("MANDATE_NOTIFY_URL", "hooks.example.com/services/"+secret) // no scheme
	_, stderr, status := runInProcess("serve", "--agent", "demo-agent", "--db", filepath.Join(t.TempDir(), "m.db"), "--store", filepath.Join(t.TempDir(), "s.db"))
	if status != 2 || strings.Contains(stderr, secret) || !strings.Contains(stderr, "--notify-url") {
		t.Fatalf("a notify URL without a scheme: exit %d\n%s", status, stderr)
	}
}

// TestStoreServeStoreIsOptional: store serve's --store has a default
// (store.db, or MANDATE_STORE), so no listing shows it as required.
func TestStoreServeStoreIsOptional(t *testing.T) {
	help, _, _ := runInProcess("store", "serve", "-h")
	group, _, _ := runInProcess("store", "-h")
	top, _, _ := runInProcess("help")
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(help, `(default "store.db")`) {
		t.Fatalf("store serve --store has no default any more; fix this test and the listings:\n%s", help)
	}
	for where, text := range map[string]string{"store serve -h": help, "store -h": group, "mandate help": top, "README.md table": string(readme)} {
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "store serve --store FILE") {
				t.Errorf("%s shows --store as required: %s", where, l)
			}
		}
	}
}

// TestUsageOnMistakes keeps the README's promise: an unknown flag, a stray
// argument or an unknown command or subcommand prints the usage once on
// stderr; a bad or missing flag value or a missing argument prints only
// what was wrong. All exit with status 2.
func TestUsageOnMistakes(t *testing.T) {
	for _, tt := range []struct {
		args      []string
		withUsage bool
		want      string
	}{
		{[]string{"version", "--nope"}, true, "flag provided but not defined: -nope"},
		{[]string{"version", "extra"}, true, `version: unexpected argument "extra"`},
		{[]string{"store", "import", "a.json", "b.json"}, true, `store import: unexpected argument "b.json"`},
		{[]string{"agent", "key", "revoke", "a", "b"}, true, `agent key revoke: unexpected argument "b"`},
		{[]string{"nope"}, true, `unknown command "nope"`},
		{[]string{"policy", "nope"}, true, `policy: unknown subcommand "nope"`},
		{[]string{"policy", "replay", "--policy", "x.csv", "--since", "-1h"}, false, "policy replay: --since"},
		// A flag's value refused or missing: the error names the flag, the
		// usage would bury it. Through parseFlags, parseOne and rates set.
		{[]string{"serve", "--approval-ttl", "0s"}, false, `serve: invalid value "0s" for flag -approval-ttl`},
		{[]string{"serve", "--approval-ttl"}, false, "serve: flag needs an argument: -approval-ttl"},
		{[]string{"init", "--force=maybe"}, false, `init: invalid boolean value "maybe" for -force`},
		{[]string{"audit", "verify", "--db"}, false, "audit verify: flag needs an argument: -db"},
		{[]string{"agent", "key", "revoke", "abc", "--db"}, false, "flag needs an argument: -db"},
		{[]string{"approvals", "show", "act_1", "--db"}, false, "flag needs an argument: -db"},
		{[]string{"rates", "set", "EUR", "1.1", "--rates"}, false, "flag needs an argument: -rates"},
		{[]string{"serve", "--bogus", "1"}, true, "flag provided but not defined: -bogus"},
		{[]string{"rates", "set", "EUR"}, false, "rates set: give a currency code and a rate"},
		{[]string{"agent", "key", "revoke"}, false, "agent key revoke: name the key id"},
	} {
		stdout, stderr, status := runInProcess(tt.args...)
		name := strings.Join(tt.args, " ")
		if status != 2 || stdout != "" || !strings.Contains(stderr, "mandate: ") || !strings.Contains(stderr, tt.want) {
			t.Errorf("mandate %s: exit status %d, stdout %q, stderr %q; want 2 and %q", name, status, stdout, stderr, tt.want)
		}
		if n, want := strings.Count(stderr, "Usage:"), map[bool]int{true: 1, false: 0}[tt.withUsage]; n != want {
			t.Errorf("mandate %s printed the usage %d times, want %d:\n%s", name, n, want, stderr)
		}
	}
}

// TestDocsNameRealFlags keeps the guides honest about flags: every --flag
// written after a command in README.md or docs/*.md (on one line, or a
// shell line continued with \) is one that command's -h lists.
func TestDocsNameRealFlags(t *testing.T) {
	help := map[string]string{}
	for _, cmd := range commands {
		stdout, _, _ := runInProcess(append(cmd[:len(cmd):len(cmd)], "-h")...)
		help[strings.Join(cmd, " ")] = stdout
	}
	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs: %v", err)
	}
	// A command's words end at a code span's end, a comment, or a pipe
	// into another program ("| jq"); "--a X | --b Y" is one synopsis.
	end := regexp.MustCompile("`|\\s#|\\|\\s*[^-\\s]|>|;|&&")
	flagRe := regexp.MustCompile(`(?:^|[\s\[(])--([a-z][a-z0-9-]*)`)
	checked := 0
	for _, doc := range append(docs, filepath.Join("..", "..", "README.md")) {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for n, line := range lines {
			for i := n + 1; strings.HasSuffix(line, "\\") && i < len(lines); i++ {
				line = strings.TrimSuffix(line, "\\") + " " + lines[i]
			}
			for _, seg := range strings.Split(line, "mandate ")[1:] {
				if loc := end.FindStringIndex(seg); loc != nil {
					seg = seg[:loc[0]]
				}
				cmd := ""
				for name := range help {
					if (seg == name || strings.HasPrefix(seg, name+" ")) && len(name) > len(cmd) {
						cmd = name
					}
				}
				if cmd == "" {
					continue
				}
				for _, m := range flagRe.FindAllStringSubmatch(seg[len(cmd):], -1) {
					checked++
					if m[1] != "help" && !regexp.MustCompile(`(?m)^  -`+m[1]+`\b`).MatchString(help[cmd]) {
						t.Errorf("%s:%d: mandate %s has no flag --%s: %s", filepath.Base(doc), n+1, cmd, m[1], strings.TrimSpace(line))
					}
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d flags checked in the docs; the test no longer finds them", checked)
	}
}
