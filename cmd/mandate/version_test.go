package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestResolveVersion(t *testing.T) {
	info := func(version string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/mandatehq/mandate", Version: version}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	const when = "2026-11-30T22:40:00Z"
	const pseudo = "v0.0.0-20261130224000-0123456789ab"
	tests := []struct {
		name, set string
		read      func() (*debug.BuildInfo, bool)
		want      string
	}{
		{"set by -ldflags, no VCS", "v1.4.0", info("v0.0.1"), "v1.4.0"},
		{"set by -ldflags, with VCS", "v1.4.0", info(pseudo, "vcs.revision", rev, "vcs.time", when, "vcs.modified", "false"),
			"v1.4.0 (revision " + rev + ", committed " + when + ")"},
		{"go install @version", "", info("v1.2.3"), "v1.2.3"},
		{"a clean checkout", "", info(pseudo, "vcs.revision", rev, "vcs.time", when, "vcs.modified", "false"),
			pseudo + " (revision " + rev + ", committed " + when + ")"},
		{"a checkout with changes", "", info(pseudo+"+dirty", "vcs.revision", rev, "vcs.time", when, "vcs.modified", "true"),
			pseudo + "+dirty (revision " + rev + ", modified, committed " + when + ")"},
		{"Go before 1.24: (devel) with a revision", "", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"),
			"(devel) (revision " + rev + ", modified)"},
		{"-buildvcs=false", "", info("(devel)"), "(devel) without VCS info"},
		{"no version at all", "", info(""), "(devel) without VCS info"},
		{"no build info", "", func() (*debug.BuildInfo, bool) { return nil, false }, "(devel) without build info"},
		{"no build info, -ldflags", "v2.0.0", func() (*debug.BuildInfo, bool) { return nil, false }, "v2.0.0"},
	}
	for _, tt := range tests {
		if got := resolveVersion(tt.set, tt.read); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if stdout, _, status := runInProcess("version"); status != 0 || stdout != "mandate "+version+"\n" || version == "" {
		t.Fatalf("mandate version: %q, status %d", stdout, status)
	}
}

// TestVersionOfBuiltBinary: a binary built from this checkout names the
// checkout's commit, and says the same in the MCP serverInfo an agent
// receives; a build with -buildvcs=false says it has no VCS info instead
// of pretending to a version. It builds its own binaries with -buildvcs
// set explicitly: GOFLAGS (even `go env -w`) may turn stamping off, and
// the binary TestMain built follows it.
func TestVersionOfBuiltBinary(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	dir := t.TempDir()
	build := func(name, vcs string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-buildvcs="+vcs, "-o", out, "./cmd/mandate")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build -buildvcs=%s: %v\n%s", vcs, err, b)
		}
		return out
	}
	versionOf := func(path string) string {
		t.Helper()
		b, err := exec.Command(path, "version").Output()
		if err != nil || !strings.HasPrefix(string(b), "mandate ") {
			t.Fatalf("%s version: %q %v", path, b, err)
		}
		return strings.TrimSuffix(strings.TrimPrefix(string(b), "mandate "), "\n")
	}

	if got := versionOf(build("mandate-novcs", "false")); got != "(devel) without VCS info" {
		t.Errorf("a -buildvcs=false build says %q, want \"(devel) without VCS info\"", got)
	}

	// Go stamps VCS information only where .git is a directory, not in a
	// `git worktree` (whose .git is a file): there the revision cannot be
	// checked, but serverInfo still must match `mandate version`.
	path := build("mandate-vcs", "auto")
	got := versionOf(path)
	if fi, err := os.Stat(filepath.Join(root, ".git")); err == nil && fi.IsDir() {
		head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD: %v", err)
		}
		if !strings.Contains(got, "(revision "+strings.TrimSpace(string(head))) || !strings.Contains(got, "committed 20") ||
			strings.HasPrefix(got, "(devel)") || strings.HasPrefix(got, "dev") {
			t.Errorf("mandate version says %q; want the module version, then revision %s and its commit time", got, head)
		}
	} else {
		t.Logf("%s/.git is not a directory (a git worktree?): Go records no VCS info here; checking serverInfo only", root)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.Command(path, "serve", "--agent", "demo-agent", "--db", filepath.Join(dir, "m.db"), "--store", filepath.Join(dir, "s.db"))
	cmd.Env = childEnv(nil)
	s, err := sdk.NewClient(&sdk.Implementation{Name: "version-test", Version: "1"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := s.InitializeResult().ServerInfo.Version; v != got {
		t.Errorf("serverInfo.version %q, want what `mandate version` says: %q", v, got)
	}
	if err := s.Close(); err != nil {
		t.Errorf("serve did not exit cleanly: %v", err)
	}
}
