package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeAgentMustBeAnAgent: serve over stdio refuses, as a usage error
// (exit status 2), an identity that may use no tool, such as the approver
// alice, instead of starting with no tools; it names the agents, and
// creates no database.
func TestServeAgentMustBeAnAgent(t *testing.T) {
	for _, tt := range []struct {
		agent string
		want  []string
	}{
		{"alice", []string{`"alice"`, "not an agent", "demo-agent", "senior-bot"}},
		{"supervisor", []string{`"supervisor"`, "not in the policy"}},
		{"intruder", []string{`"intruder"`, "not in the policy", "demo-agent"}},
	} {
		t.Run(tt.agent, func(t *testing.T) {
			dir := t.TempDir()
			db, st := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
			stdout, stderr, status := runInProcess("serve", "--agent", tt.agent, "--db", db, "--store", st)
			if status != 2 || stdout != "" {
				t.Fatalf("serve --agent %s: exit status %d, stdout %q; want 2 and nothing\n%s", tt.agent, status, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("serve --agent %s: stderr %q does not mention %q", tt.agent, stderr, w)
				}
			}
			for _, p := range []string{db, st} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Fatalf("serve --agent %s created %s (%v)", tt.agent, p, err)
				}
			}
		})
	}
}
