package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// suspendPolicy is the shipped policy with an auditor, carol, who may sign
// in but not suspend anyone.
const suspendPolicy = "\ng, carol, auditor\n"

// sharedServers starts n `mandate serve --agent demo-agent` processes on
// one database and one store, with the policy file at pol.
func sharedServers(t *testing.T, n int, dbPath, storePath, pol string) []*client.Client {
	t.Helper()
	var out []*client.Client
	for range n {
		// One after the other: the first creates and seeds the store.
		out = append(out, startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AGENT=demo-agent"},
			"--db", dbPath, "--store", storePath, "--policy", pol))
	}
	return out
}

// refusedBy reports whether a tool result is a refusal for a suspension.
func refusedBy(res *mcp.CallToolResult) bool {
	return res.IsError && strings.Contains(text(res), "suspended")
}

// untilEach polls every server with probe until ok holds for its answer,
// and returns how long after start each took; a server still not there at
// the deadline fails the test.
func untilEach(t *testing.T, servers []*client.Client, start time.Time, probe func(c *client.Client) *mcp.CallToolResult, ok func(*mcp.CallToolResult) bool) []time.Duration {
	t.Helper()
	deadline := start.Add(10 * time.Second)
	var took []time.Duration
	for i, c := range servers {
		for {
			res := probe(c)
			if ok(res) {
				took = append(took, time.Since(start))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server %d: still %s 10 s later", i, text(res))
			}
		}
	}
	return took
}

// TestSuspendStopsEveryServer: `mandate agent suspend` stops an agent's
// actions and lookups on two server processes sharing the database within
// a second of the command returning, holds its pending approval, and
// `resume` restores it; someone the policy does not let suspend is refused
// and audited.
func TestSuspendStopsEveryServer(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	pol := writePolicy(t, dir, suspendPolicy)
	servers := sharedServers(t, 2, dbPath, storePath, pol)
	addUsers(t, dbPath, "alice", "bob", "carol")
	pw := []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword}
	cli := func(args ...string) (string, error) {
		out, errOut, err := runMandate(t, pw, append(args, "--db", dbPath, "--policy", pol)...)
		return out + errOut, err
	}
	refund := func(c *client.Client) *mcp.CallToolResult {
		return call(t, c, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "0.01", "reason": "probe"})
	}
	lookup := func(c *client.Client) *mcp.CallToolResult {
		return call(t, c, "get_order", map[string]any{"order_id": "ord_1001"})
	}
	for i, c := range servers {
		if res := refund(c); res.IsError {
			t.Fatalf("server %d before: %s", i, text(res))
		}
	}
	var pending actionResult
	decode(t, call(t, servers[0], "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"}), &pending)
	if pending.Status != storage.StatusPending {
		t.Fatalf("150.00 refund: %+v, want pending", pending)
	}

	// Unauthorised: carol signs in (an auditor) but the rules do not let her.
	out, err := cli("agent", "suspend", "demo-agent", "--as", "carol", "--reason", "mischief")
	if err == nil || !strings.Contains(out, "do not let carol suspend agent") {
		t.Fatalf("carol suspending: %v\n%s", err, out)
	}
	if res := refund(servers[1]); res.IsError {
		t.Fatalf("after a refused suspend the agent is stopped: %s", text(res))
	}

	for i, c := range servers {
		// Lookups answered just now: each server holds a fresh view of the
		// suspensions, which it must read again to see the new one.
		if res := lookup(c); res.IsError {
			t.Fatalf("server %d lookup before: %s", i, text(res))
		}
	}
	out, err = cli("agent", "suspend", "demo-agent", "--as", "alice", "--reason", "prompt injection seen on cus_ada")
	returned := time.Now()
	if err != nil || !strings.Contains(out, "suspended demo-agent") {
		t.Fatalf("suspend: %v\n%s", err, out)
	}
	for i, d := range untilEach(t, servers, returned, refund, refusedBy) {
		t.Logf("server %d refuses actions %v after suspend returned", i, d)
		if d >= time.Second {
			t.Fatalf("server %d refused actions only %v after suspend returned; want < 1 s", i, d)
		}
	}
	for i, d := range untilEach(t, servers, returned, lookup, refusedBy) {
		t.Logf("server %d refuses lookups %v after suspend returned", i, d)
		if d >= time.Second {
			t.Fatalf("server %d refused lookups only %v after suspend returned; want < 1 s", i, d)
		}
	}
	if res := refund(servers[0]); strings.Contains(text(res), "prompt injection") {
		t.Fatalf("the agent was shown the reason: %s", text(res))
	}
	out, err = cli("approvals", "approve", pending.ActionID, "--as", "bob", "--store", storePath)
	if err == nil || !strings.Contains(out, "suspended") {
		t.Fatalf("approving a suspended agent's action: %v\n%s", err, out)
	}
	// The queue says it is held, and why approving fails.
	isHeld := func() bool {
		t.Helper()
		list, _, err := runMandate(t, nil, "approvals", "list", "--db", dbPath)
		show, _, err2 := runMandate(t, nil, "approvals", "show", pending.ActionID, "--db", dbPath)
		if err != nil || err2 != nil {
			t.Fatalf("approvals list/show: %v %v", err, err2)
		}
		inList := false
		for _, l := range strings.Split(list, "\n") {
			inList = inList || strings.HasPrefix(l, pending.ActionID) && strings.HasSuffix(strings.TrimSpace(l), "held: agent suspended")
		}
		inShow := strings.Contains(show, "\nheld ") && strings.Contains(show, "mandate agent resume demo-agent")
		if inList != inShow {
			t.Fatalf("held in list %v, in show %v:\n%s\n%s", inList, inShow, list, show)
		}
		return inList
	}
	if !isHeld() {
		t.Fatal("approvals list/show do not mark the suspended agent's pending action as held")
	}
	if out, _, err = runMandate(t, nil, "agent", "suspensions", "--db", dbPath); err != nil || !strings.Contains(out, "demo-agent") || !strings.Contains(out, "alice") {
		t.Fatalf("suspensions: %v\n%s", err, out)
	}

	out, err = cli("agent", "resume", "demo-agent", "--as", "bob")
	resumed := time.Now()
	if err != nil || !strings.Contains(out, "resumed demo-agent") {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	notRefused := func(res *mcp.CallToolResult) bool { return !res.IsError }
	untilEach(t, servers, resumed, refund, notRefused)
	untilEach(t, servers, resumed, lookup, notRefused)
	if isHeld() {
		t.Fatal("still marked held after resume")
	}
	if out, err = cli("approvals", "approve", pending.ActionID, "--as", "bob", "--store", storePath); err != nil {
		t.Fatalf("approving after resume: %v\n%s", err, out)
	}
	// Carried out, show says what it changed.
	if show, _, err := runMandate(t, nil, "approvals", "show", pending.ActionID, "--db", dbPath); err != nil || !strings.Contains(show, "\nchanged ") || !strings.Contains(show, "refunded ") {
		t.Fatalf("approvals show after it was carried out: %v\n%s", err, show)
	}

	// The trail: carol's refusal, alice's suspension, bob's resumption, the
	// refusals, the held approval; and it verifies.
	exp, _, err := runMandate(t, nil, "audit", "export", "--db", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"agent":"carol","tool":"suspend_agent"`, `"agent":"alice","tool":"suspend_agent"`, `"agent":"bob","tool":"resume_agent"`, `agent suspended: demo-agent is under suspension`, `held: demo-agent is suspended`} {
		if !strings.Contains(exp, want) {
			t.Fatalf("audit export lacks %s", want)
		}
	}
	if out, _, err := runMandate(t, nil, "audit", "verify", "--db", dbPath); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}
