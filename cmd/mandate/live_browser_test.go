package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/browsertest"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// newChromium starts headless Chromium for one test (internal/browsertest).
func newChromium(t *testing.T) context.Context {
	t.Helper()
	return browsertest.Start(t, 120*time.Second)
}

// startAdmin runs the real `mandate admin` on a free loopback port and
// returns its URL; it is stopped (SIGINT) at cleanup.
func startAdmin(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"admin", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = childEnv(nil)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("mandate admin had a data race")
		}
		if t.Failed() {
			t.Logf("mandate admin stderr:\n%s", stderr.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("mandate admin did not start: %v\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(line)
	if m == "" {
		t.Fatalf("mandate admin said %q", line)
	}
	return m
}

// waitForLoad waits until a load of version by command is recorded in the
// database: the admin's watcher saw the edit and reloaded.
func waitForLoad(t *testing.T, dbPath, command, version string) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		loads, err := db.PolicyLoads(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range loads {
			if l.Command == command && l.Version == version {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s of version %s recorded; loads: %d", command, version, len(loads))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// saveAs writes data to path the way editors save: a new file renamed over
// the old one.
func saveAs(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserApprovalUnderLivePolicy drives the real `mandate admin` in
// real Chromium. A supervisor has the queue open when, first, a server
// with another policy file starts and so makes its policy the live one:
// the admin, whose roles come from a policy no longer live, shows nothing
// more (503, naming both versions, audited) and the refund stays pending. Then the operator
// adds an emergency rule denying every refund to the admin's own
// policy.csv while it runs: admin reloads and records it, and approving the
// pending refund in the page denies it under that rule, with nothing
// refunded and the denial audited with the approver and comment in their
// own fields.
func TestBrowserApprovalUnderLivePolicy(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	polPath := writePolicy(t, dir, "")
	ctx := newChromium(t)

	// An agent asks for a refund that needs a person, through the real
	// server, which records the policy as live.
	agent := startServer(t, "2025-06-18", nil, "--agent", "demo-agent", "--db", dbPath, "--store", storePath, "--policy", polPath)
	var res actionResult
	decode(t, call(t, agent, "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}), &res)
	if res.Status != storage.StatusPending {
		t.Fatalf("refund: %+v, want pending", res)
	}
	id := res.ActionID
	if _, errOut, err := runMandate(t, []string{"MANDATE_ADMIN_PASSWORD=correct horse battery"}, "admin", "user", "add", "alice", "--db", dbPath); err != nil {
		t.Fatalf("admin user add: %v\n%s", err, errOut)
	}
	url := startAdmin(t, "--db", dbPath, "--store", storePath, "--policy", polPath)
	shipped := policy.Version(mandate.DefaultModel, mandate.DefaultPolicy)
	waitForLoad(t, dbPath, "admin start", shipped)

	// Sign in and open the queue.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("signin")),
		chromedp.SendKeys(chromedp.ID("name"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.CSS("#"+id))); err != nil {
		t.Fatalf("signing in and finding the refund in the queue: %v", err)
	}
	approve := func(comment string) (int64, string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.CSS("#"+id)),
			chromedp.SendKeys(chromedp.CSS("#"+id+` form[action$="/approve"] input[name=comment]`), comment)); err != nil {
			t.Fatal(err)
		}
		code := navStatus(t, ctx, chromedp.Click(chromedp.CSS("#"+id+` form[action$="/approve"] button`)))
		alert, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`[role=alert]`)))
		if err != nil {
			t.Fatalf("the refusal shows no message: %v", err)
		}
		return code, alert
	}

	// 1. Another server starts with another policy file: its policy is live.
	otherPath := writePolicy(t, t.TempDir(), "\n# a reviewed change\n")
	other := policy.Version(mandate.DefaultModel, mustRead(t, otherPath))
	startServer(t, "2025-06-18", nil, "--agent", "demo-agent", "--db", dbPath, "--store", storePath, "--policy", otherPath)
	var page string
	deadline := time.Now().Add(5 * time.Second) // the admin's view of the live version lags by up to 250 ms
	for code := int64(0); code != 503; {
		if time.Now().After(deadline) {
			t.Fatalf("the queue on an admin whose policy is not live: HTTP %d, want 503:\n%s", code, page)
		}
		code = navStatus(t, ctx, chromedp.Navigate(url+"/"))
		var err error
		if page, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body"))); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"rules are not the live ones", "holds policy version " + shipped, other} {
		if !strings.Contains(page, want) {
			t.Fatalf("the refusal lacks %q:\n%s", want, page)
		}
	}
	if trail, _ := actionTrail(t, dbPath, id); strings.Join(trail, " ") != "attempt/pending/demo-agent" {
		t.Fatalf("after the stale page: trail %v, want the refund still pending", trail)
	}

	// 2. The operator adds the emergency rule to admin's policy.csv.
	killText := append(mustRead(t, polPath), emergencyDeny...)
	saveAs(t, polPath, killText)
	kill := policy.Version(mandate.DefaultModel, killText)
	waitForLoad(t, dbPath, "admin reload", kill)
	code, alert := approve("customer is right")
	if code != 403 || !strings.Contains(alert, "the rules now refuse") {
		t.Fatalf("approving under the emergency rule: HTTP %d %q, want 403 refused by the rules", code, alert)
	}
	trail, last := actionTrail(t, dbPath, id)
	if got := strings.Join(trail, " "); got != "attempt/pending/demo-agent approval/denied/alice" {
		t.Fatalf("audit trail %s", got)
	}
	if last.Approver != "alice" || last.Comment != "customer is right" || last.PolicyVersion != kill ||
		!strings.Contains(last.Rule, "p, *, refund_order, true, deny") {
		t.Fatalf("denial record approver %q comment %q version %q rule %q", last.Approver, last.Comment, last.PolicyVersion, last.Rule)
	}
	var o orderView
	decode(t, call(t, agent, "get_order", map[string]any{"order_id": "ord_1002"}), &o)
	if o.Refunded != "0.00" {
		t.Fatalf("ord_1002 refunded %s, want nothing", o.Refunded)
	}
	if out, _, err := runMandate(t, nil, "audit", "verify", "--db", dbPath); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

// navStatus runs steps that load a page and returns the page's HTTP status.
func navStatus(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) int64 {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		t.Fatalf("loading a page: %v", err)
	}
	return resp.Status
}
