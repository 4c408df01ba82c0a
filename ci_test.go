package mandate

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckTrackedFiles runs .ci/check-tracked-files, which .ci/run calls
// first, on a scratch repository: it must pass on scripts and text and fail
// on each kind of file the repository must not track.
func TestCheckTrackedFiles(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	script, err := filepath.Abs(".ci/check-tracked-files")
	if err != nil {
		t.Fatal(err)
	}
	elf := append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, make([]byte, 57)...)
	tests := []struct {
		name string
		file string
		data []byte
		mode os.FileMode
		want string // in the output; "" when the check must pass
	}{
		{"text", "README.md", []byte("# hello\n"), 0o644, ""},
		{"a script", "run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755, ""},
		{"an ELF test binary", "tools.test", elf, 0o755, "tools.test: an ELF executable"},
		{"an ELF without the executable bit", "lib.so", elf, 0o644, "lib.so: an ELF executable"},
		{"a Mach-O binary", "mandate-darwin", []byte{0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1}, 0o644, "a Mach-O executable"},
		{"a PE binary", "mandate.exe", []byte("MZ\x90\x00\x03\x00"), 0o644, "a PE (Windows) executable"},
		{"executable text", "notes.txt", []byte("not a script\n"), 0o755, "notes.txt: executable, but not a #! script"},
		{"over 1 MB", "dump.json", []byte(strings.Repeat("x", 1<<20+1)), 0o644, "dump.json: 1048577 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			git := func(args ...string) {
				t.Helper()
				cmd := exec.Command("git", args...)
				cmd.Dir = dir
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			git("init", "-q")
			if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tt.file), tt.data, tt.mode); err != nil {
				t.Fatal(err)
			}
			git("add", ".")
			cmd := exec.Command(script)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("failed on a good repository: %v\n%s", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Fatalf("err %v, output %q; want a failure saying %q", err, out, tt.want)
			}
		})
	}
}

// TestGitignoreCoversRuntimeFiles: the files a server run from the
// repository root leaves behind (README, "Two commands"), also when killed,
// are ignored, so that none is committed by accident.
func TestGitignoreCoversRuntimeFiles(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	if err := exec.Command("git", "rev-parse", "--git-dir").Run(); err != nil {
		t.Skip("not in a git checkout")
	}
	for _, f := range []string{
		"mandate.db", "mandate.db-wal", "mandate.db-shm", "mandate.db-wlock",
		"mandate.db-lookups-85cdabdcd36d16cf", // the lookup journal a killed serve leaves
		"store.db", "store.db-wal", "store.db-shm", "store.db-wlock",
	} {
		if out, err := exec.Command("git", "check-ignore", "--no-index", f).CombinedOutput(); err != nil {
			t.Errorf("%s is not ignored by .gitignore: %v %s", f, err, out)
		}
	}
}
