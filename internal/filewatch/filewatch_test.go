package filewatch

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestWritersWait: a reload waits for a watched file created anew until
// its writer closes it, it is removed, or it has looked the same for
// settle; a file still growing at settle waits another settle; a symlink
// (or, where the number of links is known, a hard link) made over the file
// is complete at once.
func TestWritersWait(t *testing.T) {
	const settle = time.Minute
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	check := func(ws *writers, at time.Duration, want time.Duration) {
		t.Helper()
		if got := ws.wait(t0.Add(at), log); got != want {
			t.Fatalf("at %v the reload waits %v, want %v", at, got, want)
		}
	}

	for _, done := range []op{opWritten, opRemoved} {
		ws := &writers{settle: settle, files: map[string]*writing{}}
		write("half")
		ws.note(p, opCreated, t0)
		check(ws, time.Second, settle-time.Second)
		ws.note(p, opChanged, t0.Add(2*time.Second)) // not the end of the write
		check(ws, 3*time.Second, settle-3*time.Second)
		ws.note(p, done, t0.Add(4*time.Second))
		check(ws, 4*time.Second, 0)
	}

	// Never seen closed: read once it has stayed the same for settle.
	ws := &writers{settle: settle, files: map[string]*writing{}}
	write("half")
	ws.note(p, opCreated, t0)
	write("half and more") // after the create, before settle is up
	check(ws, settle, settle)
	check(ws, 2*settle-time.Second, time.Second)
	check(ws, 2*settle, 0)
	if len(ws.files) != 0 {
		t.Fatalf("still waiting for %v", ws.files)
	}
	// Gone by the time settle is up: nothing to wait for.
	ws.note(p, opCreated, t0)
	os.Remove(p)
	check(ws, settle, 0)

	// Complete at once: a symlink, and a hard link to a file with another name.
	write("v2")
	ln := filepath.Join(dir, "link")
	if err := os.Symlink(p, ln); err != nil {
		t.Fatal(err)
	}
	ws.note(ln, opCreated, t0)
	check(ws, 0, 0)
	if runtime.GOOS == "linux" {
		hard := filepath.Join(dir, "hard")
		if err := os.Link(p, hard); err != nil {
			t.Fatal(err)
		}
		ws.note(hard, opCreated, t0)
		check(ws, 0, 0)
	}
}
