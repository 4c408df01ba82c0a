package main

import (
	"runtime/debug"
	"strings"
)

// version is what `mandate version` and the MCP serverInfo say: one
// string, so an operator can match what an agent saw to a build. It is
// the module version (a tag with `go install …@v1.2.3`; since Go 1.24 a
// pseudo-version such as v0.0.0-20261130224000-9d0caa2f1b3c+dirty for a
// build from a checkout), followed by the VCS revision, whether the tree
// had changes, and the commit time, from the build information Go
// records. Release builds may set the first part with
// -ldflags "-X main.version=v1.2.3"; the revision is still appended.
var version = ""

func init() { version = resolveVersion(version, debug.ReadBuildInfo) }

// resolveVersion builds the version string from set (the -ldflags value,
// if any) and the build information read returns. It never says a bare
// "dev": without a version or a revision it says why, so a support
// question can tell a `go build -buildvcs=false` from a release.
func resolveVersion(set string, read func() (*debug.BuildInfo, bool)) string {
	bi, ok := read()
	if !ok {
		if set != "" {
			return set
		}
		return "(devel) without build info"
	}
	v := set
	if v == "" {
		v = bi.Main.Version
	}
	if v == "" {
		v = "(devel)"
	}
	var rev, when string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		if v == "(devel)" {
			return v + " without VCS info"
		}
		return v
	}
	parts := []string{"revision " + rev}
	if dirty {
		parts = append(parts, "modified")
	}
	if when != "" {
		parts = append(parts, "committed "+when)
	}
	return v + " (" + strings.Join(parts, ", ") + ")"
}
