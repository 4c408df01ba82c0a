package main

// A lookup journal write that fails, provoked in the plain binary: the
// test lowers the running server's file size limit (RLIMIT_FSIZE, with
// prlimit(2)) to one byte while the server is idle and its journal empty,
// so the next journal write(2) writes one byte and then fails with EFBIG
// (Go ignores SIGXFSZ). Nothing else in an idle server writes to a file,
// so it is the journal write that fails, and the server's log says so.

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// setFileSizeLimit sets process pid's soft RLIMIT_FSIZE to cur, leaving the
// hard limit, and returns the soft limit it had.
func setFileSizeLimit(t *testing.T, pid int, cur uint64) uint64 {
	t.Helper()
	var old syscall.Rlimit
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE, 0, uintptr(unsafe.Pointer(&old)), 0, 0); e != 0 {
		t.Fatalf("prlimit get: %v", e)
	}
	lim := syscall.Rlimit{Cur: cur, Max: old.Max}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_FSIZE, uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		t.Fatalf("prlimit set: %v", e)
	}
	return old.Cur
}

// TestLookupJournalWriteFailsRefuses checks over the binary that a lookup
// whose journal write fails is refused with nothing shown and nothing
// recorded; that later lookups are answered and recorded once each; and
// that the server, once the trail takes writes, imports its own journal,
// possibly torn (the torn line skipped), empties it and journals again, so
// a normal exit removes it.
func TestLookupJournalWriteFailsRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	dbPath, storePath, db := journalFiles(t)
	srv := startFaultServer(t, dbPath, storePath)
	js := journals(t, dbPath)
	if len(js) != 1 {
		t.Fatalf("journals %v, want the server's", js)
	}
	var answered []string
	for i := range 4 {
		answered = append(answered, lookup(t, srv, i, nil))
	}
	// Idle: everything committed and the journal emptied, so the next
	// journal write starts at offset 0 and nothing else is being written.
	deadline := time.Now().Add(5 * time.Second)
	for {
		fi, err := os.Stat(js[0])
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == 0 && len(trailLookups(t, db)) == len(answered) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's journal still holds %d bytes 5s after its lookups", fi.Size())
		}
		time.Sleep(10 * time.Millisecond)
	}

	pid := srv.cmd.Process.Pid
	old := setFileSizeLimit(t, pid, 1)
	res, err := srv.c.CallTool(t.Context(), callLookup(4))
	setFileSizeLimit(t, pid, old)
	if err != nil {
		t.Fatalf("lookup with the journal failing: %v\nstderr:\n%s", err, srv.stderr.String())
	}
	if !res.IsError || res.StructuredContent != nil || !strings.Contains(text(res), "could not be written") {
		t.Fatalf("lookup with the journal failing was answered %v %s; want refused as unavailable, with no data", res.StructuredContent, text(res))
	}
	// The log line was written before the answer, but reaches the test
	// through another pipe.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(srv.stderr.String(), "journal lookup") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(srv.stderr.String(), "journal lookup") {
		t.Fatalf("the lookup was refused, but the log does not say the journal write failed:\n%s", srv.stderr.String())
	}
	for line := range strings.Lines(srv.stderr.String()) {
		if strings.Contains(line, "journal lookup") {
			t.Logf("the server logged: %s", strings.TrimSpace(line))
		}
	}
	refused := lookupKey("get_order", "ord_f004")
	// Later lookups are answered: the first waits for its own commit; once
	// the trail takes writes again the server imports its own journal (the
	// torn line skipped) and journals again.
	for i := 5; i < 8; i++ {
		answered = append(answered, lookup(t, srv, i, nil))
	}
	for deadline := time.Now().Add(5 * time.Second); len(trailLookups(t, db)) < len(answered) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	checkTrail(t, db, answered, "after the journal failed")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fi, err := os.Stat(js[0])
		if err != nil {
			t.Fatalf("the server's journal: %v", err)
		}
		if fi.Size() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's journal still holds %d bytes 5s after the trail took writes again", fi.Size())
		}
	}
	if err := srv.c.Close(); err != nil {
		t.Fatalf("mandate serve did not exit cleanly when its client hung up: %v\nstderr:\n%s", err, srv.stderr.String())
	}
	srv.checkRace(t)
	gone(t, js[0], "after a normal exit")
	srv = startFaultServer(t, dbPath, storePath)
	if err := srv.c.Close(); err != nil {
		t.Fatalf("the next server did not exit cleanly: %v\nstderr:\n%s", err, srv.stderr.String())
	}
	srv.checkRace(t)
	if got := trailLookups(t, db)[refused]; got != 0 {
		t.Fatalf("the refused lookup %q has %d records", refused, got)
	}
	checkTrail(t, db, answered, "after the import")
	verifyTrail(t, dbPath, "after the import")
}
