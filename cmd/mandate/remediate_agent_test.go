package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemediateUnknownAgent: a name that is no agent in the policy and has
// no recorded actions (a typo) is a usage error naming the agents; a known
// agent with nothing recorded in the window gets a plain note, not an
// empty plan alone.
func TestRemediateUnknownAgent(t *testing.T) {
	dir := t.TempDir()
	db, st := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	addUsers(t, db) // creates the database
	data := filepath.Join(dir, "data.json")
	if err := os.WriteFile(data, []byte(`{"customers": [], "orders": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := polRun(t, "store", "import", "--store", st, data); err != nil {
		t.Fatalf("store import: %v\n%s", err, out)
	}
	stdout, stderr, status := runInProcess("remediate", "--agent", "demo-agnet", "--since", "2h", "--db", db, "--store", st)
	if status != 2 || !strings.Contains(stderr, `"demo-agnet" is not an agent in the policy and has no recorded actions`) || !strings.Contains(stderr, "demo-agent") {
		t.Fatalf("remediate --agent demo-agnet: exit status %d\nstdout %s\nstderr %s", status, stdout, stderr)
	}
	stdout, stderr, status = runInProcess("remediate", "--agent", "demo-agent", "--since", "2h", "--db", db, "--store", st)
	if status != 0 || !strings.Contains(stdout, "demo-agent has no recorded actions in the last 2h") {
		t.Fatalf("remediate --agent demo-agent: exit status %d\nstdout %s\nstderr %s", status, stdout, stderr)
	}
	// 0 is the whole trail, as for lineage, export and policy replay.
	stdout, stderr, status = runInProcess("remediate", "--agent", "demo-agent", "--since", "0", "--db", db, "--store", st)
	if status != 0 || !strings.Contains(stdout, "over the whole trail") || !strings.Contains(stdout, "no recorded actions in the whole trail") {
		t.Fatalf("remediate --since 0: exit status %d\nstdout %s\nstderr %s", status, stdout, stderr)
	}
}
