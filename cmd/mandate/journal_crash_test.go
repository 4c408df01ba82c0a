package main

// Crash tests of the lookup journal (storage/journal.go) over the built
// binary, with no fault injection. An allowed lookup's record is written to
// the server's journal file before the data is shown and committed to the
// audit trail behind the answer, after up to companyWait
// (storage/writer.go). A server killed right after the last answer usually
// leaves some answered lookups uncommitted, only in its journal; the next
// server must import them, each exactly once, and remove the journal. A
// journal still held by a live server (a stopped one, here) must be left
// alone.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	// journalLookups is how many lookups each round makes before the kill.
	journalLookups = 20
	// journalRounds kills the server this many times, and up to
	// journalMaxRounds while no kill has left a lookup uncommitted.
	journalRounds, journalMaxRounds = 4, 10
)

// lookupKey names one lookup by what it looked up, e.g.
// "get_order ord_f001": the answer to a lookup carries no action id, so the
// tests give every lookup its own id and find its record by that.
func lookupKey(tool, id string) string { return tool + " " + id }

// recordLookupKey is lookupKey of an audit record of a lookup, or "" for
// any other record.
func recordLookupKey(t *testing.T, r *storage.Record) string {
	t.Helper()
	var args struct {
		OrderID    string `json:"order_id"`
		CustomerID string `json:"customer_id"`
	}
	switch r.Tool {
	case "get_order", "get_customer":
	default:
		return ""
	}
	if err := json.Unmarshal(r.Args, &args); err != nil {
		t.Fatalf("record %d (%s) args %s: %v", r.Seq, r.Tool, r.Args, err)
	}
	if r.Tool == "get_order" {
		return lookupKey(r.Tool, args.OrderID)
	}
	return lookupKey(r.Tool, args.CustomerID)
}

// lookup makes lookup i as senior-bot: get_order of ord_fNNN for even i,
// get_customer of cus_fNNN for odd i. It returns its key once answered
// with data, and fails the test otherwise. after runs right after the
// answer is read (the kill), before anything else.
func lookup(t *testing.T, srv *faultServer, i int, after func()) string {
	t.Helper()
	req := callLookup(i)
	tool := req.Params.Name
	id := fmt.Sprintf("ord_f%03d", i)
	if tool == "get_customer" {
		id = fmt.Sprintf("cus_f%03d", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	res, err := srv.c.CallTool(ctx, req)
	cancel()
	if after != nil && err == nil {
		after()
	}
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", tool, id, err, srv.stderr.String())
	}
	b, _ := json.Marshal(res.StructuredContent)
	var got struct {
		ID string `json:"id"`
	}
	if res.IsError || json.Unmarshal(b, &got) != nil || got.ID != id {
		t.Fatalf("%s %s: %s (%s), want its data", tool, id, b, text(res))
	}
	return lookupKey(tool, id)
}

// callLookup is the request of lookup i (see lookup).
func callLookup(i int) mcp.CallToolRequest {
	if i%2 == 1 {
		return mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get_customer", Arguments: map[string]any{"customer_id": fmt.Sprintf("cus_f%03d", i)}}}
	}
	return mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get_order", Arguments: map[string]any{"order_id": fmt.Sprintf("ord_f%03d", i)}}}
}

// trailLookups counts the lookup records in the trail by lookupKey, read
// from the committed database (db has no journal and writes nothing, so
// it reads only what servers committed). It fails the test if any record
// shares its action id and phase with another, or a lookup's record is
// not an allowed read.
func trailLookups(t *testing.T, db *storage.DB) map[string]int {
	t.Helper()
	out, err := readTrailLookups(t, db)
	if err != nil {
		t.Fatalf("read the trail: %v", err)
	}
	return out
}

// readTrailLookups is trailLookups returning the error of the read.
func readTrailLookups(t *testing.T, db *storage.DB) (map[string]int, error) {
	t.Helper()
	out := map[string]int{}
	seen := map[string]int64{}
	err := db.Records(context.Background(), storage.Filter{}, func(r *storage.Record) error {
		id := r.ActionID + " " + r.Phase
		if prev, ok := seen[id]; ok {
			return fmt.Errorf("records %d and %d are both %s", prev, r.Seq, id)
		}
		seen[id] = r.Seq
		if k := recordLookupKey(t, r); k != "" {
			if r.Decision != policy.Allow || r.Phase != storage.PhaseAttempt || r.Outcome != "read" || r.Agent != "senior-bot" {
				return fmt.Errorf("record %d of %s: %s %s %s by %s, want an allowed attempt read by senior-bot", r.Seq, k, r.Decision, r.Phase, r.Outcome, r.Agent)
			}
			out[k]++
		}
		return nil
	})
	return out, err
}

// checkTrail fails the test unless the trail holds exactly one record of
// each lookup in answered and no other lookup.
func checkTrail(t *testing.T, db *storage.DB, answered []string, when string) {
	t.Helper()
	got := trailLookups(t, db)
	for _, k := range answered {
		if got[k] != 1 {
			t.Fatalf("%s: the trail has %d records of the answered lookup %q, want 1", when, got[k], k)
		}
	}
	if len(got) != len(answered) {
		for k := range got {
			if !slices.Contains(answered, k) {
				t.Fatalf("%s: the trail has a record of %q, which was never answered", when, k)
			}
		}
	}
}

// journals lists the lookup journals of the database at dbPath.
func journals(t *testing.T, dbPath string) []string {
	t.Helper()
	names, err := filepath.Glob(dbPath + "-lookups-*")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// journalKeys reads a journal file as the importer does (skipping lines
// that do not parse) and returns the lookupKeys of its records.
func journalKeys(t *testing.T, name string) map[string]bool {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var r storage.Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ActionID == "" {
			continue
		}
		if k := recordLookupKey(t, &r); k != "" {
			out[k] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// gone fails the test if the file name still exists.
func gone(t *testing.T, name, why string) {
	t.Helper()
	if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: journal %s is still there (stat: %v)", why, filepath.Base(name), err)
	}
}

// journalFiles sets up the files of a journal test: the fault tests' shop
// imported into a store, and a database opened without a journal for the
// test to read the trail.
func journalFiles(t *testing.T) (dbPath, storePath string, db *storage.DB) {
	t.Helper()
	dir := t.TempDir()
	dbPath, storePath, shop := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db"), filepath.Join(dir, "shop.json")
	faultShop(t, shop)
	if _, stderr, err := runMandate(t, nil, "store", "import", "--store", storePath, shop); err != nil {
		t.Fatalf("store import: %v\n%s", err, stderr)
	}
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dbPath, storePath, db
}

// verifyTrail runs `mandate audit verify` on the database.
func verifyTrail(t *testing.T, dbPath, when string) {
	t.Helper()
	if stdout, stderr, err := runMandate(t, faultEnv, "audit", "verify", "--db", dbPath); err != nil {
		t.Fatalf("%s: mandate audit verify: %v\n%s%s", when, err, stdout, stderr)
	}
}

// TestKillAfterLookups kills `mandate serve` with SIGKILL the moment it has
// read the answer to the last of a run of lookups, and checks what the dead
// server left (committed records, and its journal holding every answered
// lookup that is not committed) and that the next server imports exactly
// the missing ones and removes the journal.
func TestKillAfterLookups(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the server several times")
	}
	dbPath, storePath, db := journalFiles(t)
	var answered []string // every lookup answered so far, across rounds
	hits, next := 0, 0
	srv := startFaultServer(t, dbPath, storePath)
	if js := journals(t, dbPath); len(js) != 1 {
		t.Fatalf("a serving server has journals %v, want its own", js)
	}
	round := 0
	for ; round < journalRounds || (hits == 0 && round < journalMaxRounds); round++ {
		var keys []string
		for j := range journalLookups {
			var kill func()
			if j == journalLookups-1 {
				kill = func() { srv.kill(t) }
			}
			keys = append(keys, lookup(t, srv, next, kill))
			next++
		}
		answered = append(answered, keys...)

		// What the dead server left: the trail, read afresh, has at most
		// one record of each lookup, and its journal holds the rest.
		committed := trailLookups(t, db)
		js := journals(t, dbPath)
		if len(js) != 1 {
			t.Fatalf("round %d: after the kill the journals are %v, want the killed server's", round, js)
		}
		inJournal := journalKeys(t, js[0])
		var missing []string
		for _, k := range answered {
			switch committed[k] {
			case 0:
				missing = append(missing, k)
				if !inJournal[k] {
					t.Fatalf("round %d: lookup %q was answered, is not in the trail, and not in the killed server's journal (which holds %d records)", round, k, len(inJournal))
				}
			case 1:
			default:
				t.Fatalf("round %d: the trail has %d records of lookup %q", round, committed[k], k)
			}
		}
		if len(committed) != len(answered)-len(missing) {
			t.Fatalf("round %d: the trail has records of %d lookups, %d were answered and %d are missing", round, len(committed), len(answered), len(missing))
		}
		if len(missing) > 0 {
			hits++
		}
		t.Logf("round %d: killed with %d of %d answered lookups only in the journal (%d records in it)", round, len(missing), len(keys), len(inJournal))

		// The next server imports the dead one's journal before it
		// serves: once it has answered initialize, every answered lookup
		// has exactly one record and the old journal is gone.
		srv = startFaultServer(t, dbPath, storePath)
		gone(t, js[0], fmt.Sprintf("round %d: after the restart", round))
		if now := journals(t, dbPath); len(now) != 1 {
			t.Fatalf("round %d: after the restart the journals are %v, want the new server's only", round, now)
		}
		checkTrail(t, db, answered, fmt.Sprintf("round %d: after the restart", round))
		verifyTrail(t, dbPath, fmt.Sprintf("round %d", round))
	}
	// The last server stops normally: its journal goes, and the one
	// lookup it made is in the trail.
	answered = append(answered, lookup(t, srv, next, nil))
	if err := srv.c.Close(); err != nil {
		t.Fatalf("mandate serve did not exit cleanly when its client hung up: %v\nstderr:\n%s", err, srv.stderr.String())
	}
	srv.checkRace(t)
	if js := journals(t, dbPath); len(js) != 0 {
		t.Fatalf("after a normal exit the journals %v remain", js)
	}
	checkTrail(t, db, answered, "at the end")
	verifyTrail(t, dbPath, "at the end")
	if hits == 0 {
		t.Fatalf("none of %d kills left an answered lookup uncommitted, so the journal import was never exercised", round)
	}
	t.Logf("%d of %d kills left lookups only in the journal; %d lookups, each recorded once", hits, round, len(answered))
}

// TestLookupJournalLiveProcessNotImported runs two servers on one
// database. Server A is stopped (SIGSTOP) the moment it has answered a run
// of lookups, usually before it has committed the last of them; server B
// started meanwhile must leave A's journal alone (A is alive: it holds the
// journal's lock), and import nothing of it. Once A resumes and exits
// normally, its journal is removed and each of its lookups is in the trail
// exactly once.
func TestLookupJournalLiveProcessNotImported(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several servers")
	}
	dbPath, storePath, db := journalFiles(t)
	a := startFaultServer(t, dbPath, storePath)
	js := journals(t, dbPath)
	if len(js) != 1 {
		t.Fatalf("server A alone: journals %v, want one", js)
	}
	aj := js[0]
	var answered []string
	next := 0
	resumed := true
	resume := func() {
		if !resumed {
			resumed = true
			if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatalf("SIGCONT server A: %v", err)
			}
		}
	}
	defer resume() // so the cleanup's Close can end it
	// Runs of lookups, A stopped after each, until one stops it with a
	// lookup answered and not committed (in up to journalMaxRounds runs).
	var before map[string]int
	midCommit := 0 // runs whose stop left A inside a commit the trail could not be read past
	for run := 0; ; run++ {
		for j := range journalLookups {
			var stop func()
			if j == journalLookups-1 {
				stop = func() {
					if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
						t.Fatalf("SIGSTOP server A: %v", err)
					}
					resumed = false
					// kill returns before every thread has stopped: one in
					// a system call (a commit, emptying the journal) may
					// finish it first. Read nothing until all have.
					waitStopped(t, a.cmd.Process.Pid)
				}
			}
			answered = append(answered, lookup(t, a, next, stop))
			next++
		}
		var err error
		before, err = readTrailLookups(t, db)
		if err != nil && strings.Contains(err.Error(), "locking protocol") && midCommit < journalMaxRounds {
			// A was stopped inside a commit, holding the WAL index in a
			// state no reader may take a snapshot of until A runs on
			// (SQLITE_PROTOCOL, seen once in CI). Not what this test is
			// about: resume A and stop it again.
			midCommit++
			run--
			resume()
			continue
		} else if err != nil {
			t.Fatalf("read the trail (A stopped): %v", err)
		}
		if len(before) < len(answered) || run == journalMaxRounds-1 {
			break
		}
		resume()
	}
	inJournal := journalKeys(t, aj)
	for _, k := range answered {
		if before[k] == 0 && !inJournal[k] {
			t.Fatalf("server A is stopped; lookup %q was answered, is not in the trail, and not in A's journal", k)
		}
	}

	// A may have been stopped holding the database's write lock (in a
	// commit); then B cannot start until A resumes. After a while A is
	// resumed so the test ends, and this run checks less (logged).
	cont := time.AfterFunc(5*time.Second, func() { a.cmd.Process.Signal(syscall.SIGCONT) })
	b := startFaultServer(t, dbPath, storePath)
	stoppedThrough := cont.Stop()
	if stoppedThrough {
		// B has imported the journals no live server holds; A's is not
		// one of them.
		if _, err := os.Stat(aj); err != nil {
			t.Fatalf("server B removed the journal of live server A: %v", err)
		}
		if after := trailLookups(t, db); len(after) != len(before) {
			t.Fatalf("server A is stopped with %d lookups committed; after server B started the trail has %d: B imported A's journal", len(before), len(after))
		}
		t.Logf("server B started while A was stopped with %d of %d lookups committed", len(before), len(answered))
	} else {
		t.Logf("server A was stopped inside a commit, so B started only after A resumed: this run checks only that A's journal outlives B's start")
		resumed = true
	}
	if _, err := os.Stat(aj); err != nil {
		t.Fatalf("after server B started, A's journal: %v", err)
	}
	if js := journals(t, dbPath); len(js) != 2 {
		t.Fatalf("two live servers: journals %v, want two", js)
	}
	resume()

	// Both serve on; then A stops normally.
	for range 4 {
		answered = append(answered, lookup(t, a, next, nil))
		next++
		answered = append(answered, lookup(t, b, next, nil))
		next++
	}
	if err := a.c.Close(); err != nil {
		t.Fatalf("server A did not exit cleanly when its client hung up: %v\nstderr:\n%s", err, a.stderr.String())
	}
	a.checkRace(t)
	gone(t, aj, "after server A exited normally")
	if js := journals(t, dbPath); len(js) != 1 {
		t.Fatalf("server B alone: journals %v, want its own", js)
	}
	answered = append(answered, lookup(t, b, next, nil))
	if err := b.c.Close(); err != nil {
		t.Fatalf("server B did not exit cleanly when its client hung up: %v\nstderr:\n%s", err, b.stderr.String())
	}
	b.checkRace(t)
	if js := journals(t, dbPath); len(js) != 0 {
		t.Fatalf("after both servers exited: journals %v remain", js)
	}
	checkTrail(t, db, answered, "after both servers exited")
	verifyTrail(t, dbPath, "after both servers exited")
}

// waitStopped waits until every thread of process pid is stopped (state T
// in /proc/PID/task/*/stat), so that what the test reads next cannot
// change under it.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	if _, err := os.Stat("/proc/self/task"); err != nil {
		time.Sleep(200 * time.Millisecond) // no procfs to ask: give the threads time
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(stats) > 0
		for _, st := range stats {
			b, err := os.ReadFile(st)
			i := bytes.LastIndexByte(b, ')')
			if err != nil || i < 0 || i+2 >= len(b) {
				continue // a thread that has gone
			}
			if state := b[i+2]; state != 'T' && state != 't' {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: not every thread stopped 10 s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}
