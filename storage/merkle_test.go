package storage

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/attest"
	"github.com/transparency-dev/merkle/proof"
)

// mth is RFC 6962's Merkle Tree Hash, section 2.1, written from the RFC so
// the stored tree is checked against something it does not share code with.
func mth(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		return attest.Hasher.EmptyRoot()
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return attest.Hasher.HashChildren(mth(leaves[:k]), mth(leaves[k:]))
}

// recomputedLeaves is every record's leaf hash from its exported JSON, as
// an outside verifier would compute it.
func recomputedLeaves(t testing.TB, db *DB) [][]byte {
	t.Helper()
	var leaves [][]byte
	err := db.Records(context.Background(), Filter{}, func(r *Record) error {
		// As `audit export` writes it: no HTML escaping.
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			return err
		}
		seq, data, err := ExportedLeaf(b.Bytes())
		if err != nil {
			return err
		}
		if seq != int64(len(leaves))+1 {
			return fmt.Errorf("seq %d after %d records", seq, len(leaves))
		}
		leaves = append(leaves, attest.LeafHash(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return leaves
}

// appendN appends n records from up to 16 goroutines, so group commit
// keeps large trails quick to write.
func appendN(t testing.TB, db *DB, n int) {
	t.Helper()
	g := 1
	for _, d := range []int{17, 16, 8, 4, 2} {
		if n%d == 0 && n >= 4*d {
			g = d
			break
		}
	}
	for _, err := range appendFrom(db, "agent", g, n/g) {
		t.Fatal(err)
	}
}

// checkTree checks the stored tree against the rows: its size, its root
// against RFC 6962 recomputed from the exported records, and every stored
// leaf.
func checkTree(t testing.TB, db *DB, want int) [][]byte {
	t.Helper()
	ctx := context.Background()
	leaves := recomputedLeaves(t, db)
	if len(leaves) != want {
		t.Fatalf("%d records, want %d", len(leaves), want)
	}
	size, err := db.TreeSize(ctx)
	if err != nil || size != uint64(want) {
		t.Fatalf("tree size %d (%v), want %d", size, err, want)
	}
	root, err := db.TreeRoot(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(root, mth(leaves)) {
		t.Fatalf("stored root %x, recomputed %x", root, mth(leaves))
	}
	rows, err := db.db.Query(`SELECT pos - 1, hash FROM merkle_nodes WHERE level = 0 ORDER BY pos`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next(); i++ {
		var idx int
		var stored []byte
		if err := rows.Scan(&idx, &stored); err != nil {
			t.Fatal(err)
		}
		if idx != i || i >= len(leaves) || !bytes.Equal(stored, leaves[i]) {
			t.Fatalf("stored leaf %d at row %d: %x, recomputed %x", idx, i, stored, leaves[min(i, len(leaves)-1)])
		}
	}
	if i != len(leaves) {
		t.Fatalf("%d stored leaves, want %d", i, len(leaves))
	}
	return leaves
}

// proveLeaf chooses the leaves of an n-leaf tree whose inclusion proofs
// TestMerkleInclusionEveryRecord checks: every one up to 1,000 leaves; in
// a bigger tree the first and last 64, those next to a power of two
// (where a subtree ends) and every 61st, since under -race each proof
// costs a few milliseconds and 4,097 of them took 22 s of CI.
func proveLeaf(i, n int) bool {
	if n <= 1000 || i < 64 || i >= n-64 || i%61 == 0 {
		return true
	}
	pow2 := func(x int) bool { return x > 0 && x&(x-1) == 0 }
	return pow2(i) || pow2(i+1) || pow2(i-1)
}

func TestMerkleInclusionEveryRecord(t *testing.T) {
	for _, n := range []int{1, 2, 3, 1000, 4097} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ctx := context.Background()
			db := openTest(t)
			appendN(t, db, n)
			leaves := checkTree(t, db, n)
			root := mth(leaves)
			for i, l := range leaves {
				if !proveLeaf(i, n) {
					continue
				}
				p, err := db.InclusionProof(ctx, uint64(i), uint64(n))
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyInclusion(attest.Hasher, uint64(i), uint64(n), l, p, root); err != nil {
					t.Fatalf("leaf %d of %d: %v", i, n, err)
				}
				// The same proof does not hold for another leaf or index.
				if n > 1 {
					j := (i + 1) % n
					if proof.VerifyInclusion(attest.Hasher, uint64(i), uint64(n), leaves[j], p, root) == nil {
						t.Fatalf("leaf %d's proof verifies leaf %d", i, j)
					}
					if proof.VerifyInclusion(attest.Hasher, uint64(j), uint64(n), l, p, root) == nil {
						t.Fatalf("leaf %d's proof verifies at index %d", i, j)
					}
				}
			}
			// Proofs against older sizes (checkpoints taken earlier), and
			// consistency between them.
			for _, old := range []int{1, n / 3, n / 2, n - 1} {
				if old < 1 || old > n {
					continue
				}
				oldRoot := mth(leaves[:old])
				if r, err := db.TreeRoot(ctx, uint64(old)); err != nil || !bytes.Equal(r, oldRoot) {
					t.Fatalf("root at %d: %x (%v), want %x", old, r, err, oldRoot)
				}
				i := uint64(old - 1)
				p, err := db.InclusionProof(ctx, i, uint64(old))
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyInclusion(attest.Hasher, i, uint64(old), leaves[i], p, oldRoot); err != nil {
					t.Fatalf("leaf %d of %d: %v", i, old, err)
				}
				c, err := db.ConsistencyProof(ctx, uint64(old), uint64(n))
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyConsistency(attest.Hasher, uint64(old), uint64(n), c, oldRoot, root); err != nil {
					t.Fatalf("consistency %d to %d: %v", old, n, err)
				}
			}
		})
	}
}

// TestLeafIsExportedRecord checks that the leaf written at append time is
// the one recomputed from the exported JSON, for records whose stored form
// differs from a naive re-encoding: spaced JSON, HTML characters, approver
// and comment set, an empty args.
func TestLeafIsExportedRecord(t *testing.T) {
	db := openTest(t)
	appendAll(t, db, []*Record{
		{Agent: "a", Tool: "refund_order", Phase: PhaseAttempt, Args: json.RawMessage(`{ "reason": "<b>&</b>",  "n": 1 }`)},
		{Agent: "a", Tool: "get_order", Phase: PhaseAttempt},
		{Agent: "bob", Tool: "refund_order", Phase: PhaseApproval, Approver: "bob", Comment: "ok \u2028 \"quoted\"", Duration: 1500 * time.Nanosecond},
		{Agent: "a", Tool: "refund_order", Phase: PhaseOutcome, Attrs: json.RawMessage(`{"x":"\u003c"}`), Error: "é"},
	})
	checkTree(t, db, 4)
	db.Close()
	// Reopening finds the tree intact and leaves it alone.
	db2, err := Open(context.Background(), db.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	checkTree(t, db2, 4)
}

// TestExportedLeafRejectsAlteredForm checks that a record is accepted only
// in the form the export writes: encoding/json decodes keys in any case,
// keeps the last of duplicates and skips unknown ones, so each edit below
// leaves the decoded record and its leaf as they were, while jq reads
// something else.
func TestExportedLeafRejectsAlteredForm(t *testing.T) {
	db := openTest(t)
	appendAll(t, db, []*Record{{Agent: "a", Tool: "refund_order", Phase: PhaseAttempt, Decision: "allow", ActionID: "act_1",
		Args: json.RawMessage(`{ "reason": "<b>&</b>",  "n": 1 }`)}})
	var exported string
	db.Records(context.Background(), Filter{}, func(r *Record) error {
		b, err := r.MarshalJSON()
		exported = string(b)
		return err
	})
	seq, want, err := ExportedLeaf(json.RawMessage("  " + exported + "\n"))
	if err != nil || seq != 1 {
		t.Fatalf("the exported record: seq %d, %v", seq, err)
	}
	for name, edit := range map[string]func(string) string{
		"key in another case": func(s string) string {
			return strings.TrimSuffix(strings.Replace(s, `"decision":"allow"`, `"decision":"deny"`, 1), "}") + `,"Decision":"allow"}`
		},
		"repeated key": func(s string) string {
			return strings.Replace(s, `"approver":""`, `"approver":"alice","approver":""`, 1)
		},
		"unknown key":        func(s string) string { return strings.TrimSuffix(s, "}") + `,"approved_by":"ceo@example.com"}` },
		"missing key":        func(s string) string { return strings.Replace(s, `"comment":"",`, "", 1) },
		"leaf_index altered": func(s string) string { return strings.Replace(s, `"leaf_index":0`, `"leaf_index":7`, 1) },
		"escaped string":     func(s string) string { return strings.Replace(s, `"agent":"a"`, `"agent":"\u0061"`, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			altered := edit(exported)
			if altered == exported {
				t.Fatal("the edit changed nothing")
			}
			var r Record
			if err := json.Unmarshal([]byte(altered), &r); err != nil || !bytes.Equal(r.LeafData(), want) {
				t.Fatalf("the edit changed the decoded leaf (%v): the test shows nothing", err)
			}
			if _, _, err := ExportedLeaf(json.RawMessage(altered)); err == nil {
				t.Fatalf("ExportedLeaf accepted %s", altered)
			}
		})
	}
}

func TestMerkleRepair(t *testing.T) {
	for _, c := range []struct {
		name  string
		stmts []string
		want  int
	}{
		{"no tree (a database from before it)", []string{`DELETE FROM merkle_nodes`}, 20},
		{"tree behind", []string{`DELETE FROM merkle_nodes WHERE pos > 13`}, 20},
		{"tree ahead of the records", []string{`DELETE FROM audit WHERE seq > 11`}, 11},
		{"a leaf overwritten", []string{`UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 0 AND pos = 20`}, 20},
		{"an inner node missing", []string{`DELETE FROM merkle_nodes WHERE level = 2 AND pos = 8`}, 20},
		// Nodes at the last pos but not its leaf: the size MAX(pos) claims
		// has no leaf to check, so the tree is rebuilt.
		{"the last leaf missing, its parents kept", []string{`DELETE FROM merkle_nodes WHERE level = 0 AND pos = 20`}, 20},
		{"a record deleted, no tree", []string{`DELETE FROM audit WHERE seq = 6`, `DELETE FROM merkle_nodes`}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, _ := vtChain(t)
			appendN(t, db, 20-vtChainLen)
			checkTree(t, db, 20)
			db.Close()
			vtTamper(t, db, c.stmts...)
			db2, err := Open(context.Background(), db.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer db2.Close()
			if c.want < 0 {
				// A gap in seq: the database opens, so verify can report
				// it, and appending fails closed.
				if _, err := db2.Verify(context.Background()); err == nil {
					t.Fatal("Verify found nothing wrong")
				}
				if err := db2.Append(context.Background(), &Record{Agent: "a", Tool: "get_order"}); err == nil {
					t.Fatal("Append to a trail with a gap succeeded")
				}
				return
			}
			checkTree(t, db2, c.want)
			// Appending goes on from the repaired tree.
			appendN(t, db2, 3)
			checkTree(t, db2, c.want+3)
		})
	}
}

// merkleKillEnv names the database the child of TestMerkleSurvivesKill
// appends to until it is killed.
const merkleKillEnv = "MANDATE_STORAGE_TEST_MERKLE_KILL_DB"

// TestMerkleKillChild is not a test: it is the process TestMerkleSurvivesKill
// kills while it appends.
func TestMerkleKillChild(t *testing.T) {
	path := os.Getenv(merkleKillEnv)
	if path == "" {
		t.Skip("the child process of TestMerkleSurvivesKill")
	}
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		for _, err := range appendFrom(db, "child", 4, 5) {
			t.Fatal(err)
		}
		if i == 10 {
			fmt.Println("appending")
		}
	}
}

// TestMerkleSurvivesKill kills a process with SIGKILL while it appends
// from several goroutines, then opens the database: the tree must hold
// exactly the records, verified against RFC 6962 recomputed from them.
func TestMerkleSurvivesKill(t *testing.T) {
	db := openTest(t)
	path := db.Path
	db.Close()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMerkleKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), merkleKillEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "appending\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child said %q; stderr: %s", round, line, stderr.String())
		}
		cmd.Process.Kill() // SIGKILL, mid-append
		cmd.Wait()
		db, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		n, _, err := db.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n < 220*int64(round+1) {
			t.Fatalf("round %d: only %d records", round, n)
		}
		checkTree(t, db, int(n))
		if _, err := db.Verify(context.Background()); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

// rechainAll recomputes every record's prev_hash and hash from the rows as they
// are, as someone who rewrote a record and knows the algorithm would, so
// that Verify passes again.
func rechainAll(t *testing.T, db *DB) {
	t.Helper()
	var stmts []string
	prev := genesis
	err := db.Records(context.Background(), Filter{}, func(r *Record) error {
		h := hashRecord(prev, r.Seq, r.hashed())
		stmts = append(stmts, fmt.Sprintf(`UPDATE audit SET prev_hash = '%s', hash = '%s' WHERE seq = %d`, prev, h, r.Seq))
		prev = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	vtTamper(t, db, stmts...)
}

func TestCheckExtends(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name      string
		first     int // records when the checkpoint is taken
		more      int // records after it
		tamper    []string
		rechain   bool
		truncated bool
		seq       int64  // the record the failure names, if any
		want      string // in the reason; "" for success
	}{
		{"intact", 100, 50, nil, false, false, 0, ""},
		{"nothing added", 7, 0, nil, false, false, 0, ""},
		{"empty checkpoint", 0, 5, nil, false, false, 0, ""},
		{"cut to below the checkpoint", 100, 50, []string{`DELETE FROM audit WHERE seq > 30`}, true, true, 0, "the checkpoint covers 100"},
		{"cut to just below", 100, 0, []string{`DELETE FROM audit WHERE seq = 100`}, false, true, 0, "records 100 to 100 were removed"},
		{"cut after the checkpoint", 100, 50, []string{`DELETE FROM audit WHERE seq > 120`}, false, false, 0, ""},
		{"rewritten and rechained", 40, 10, []string{`UPDATE audit SET args = '{"amount":"2500.00"}' WHERE seq = 17`}, true, false, 17, "REWRITTEN"},
		{"rewritten after the checkpoint", 40, 10, []string{`UPDATE audit SET args = '{"amount":"2500.00"}' WHERE seq = 45`}, true, false, 45, "rewritten after the checkpoint"},
		{"rewritten with the tree", 40, 10, []string{`UPDATE audit SET agent = 'x' WHERE seq = 3`, `DELETE FROM merkle_nodes`}, true, false, 0, "REWRITTEN"},
		{"one deleted and the rest renumbered", 40, 10, []string{`DELETE FROM audit WHERE seq = 9`, `UPDATE audit SET seq = seq - 1 WHERE seq > 9`}, true, false, 0, "REWRITTEN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t)
			appendN(t, db, c.first)
			root, err := db.TreeRoot(ctx, uint64(c.first))
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, db, c.more)
			if c.tamper != nil {
				db.Close()
				vtTamper(t, db, c.tamper...)
				db, err = Open(ctx, db.Path)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if c.rechain {
					rechainAll(t, db)
				}
				// The chain alone sees nothing wrong.
				if _, err := db.Verify(ctx); err != nil {
					t.Fatalf("Verify after tampering: %v; the test means to hide it from the chain", err)
				}
			}
			n, err := db.CheckExtends(ctx, uint64(c.first), root)
			if c.want == "" {
				if err != nil {
					t.Fatalf("CheckExtends: %v", err)
				}
				if head, _, _ := db.Head(ctx); n != uint64(head) {
					t.Fatalf("CheckExtends says %d records, the trail has %d", n, head)
				}
				return
			}
			var e *ExtendError
			if !errors.As(err, &e) {
				t.Fatalf("CheckExtends = %v, want an ExtendError", err)
			}
			if e.Truncated != c.truncated || e.Seq != c.seq || !strings.Contains(e.Reason, c.want) {
				t.Fatalf("CheckExtends = %+v, want truncated %v, seq %d, reason with %q", e, c.truncated, c.seq, c.want)
			}
		})
	}
}

// TestExtendsLastCheckpoint checks what a signer asks before signing: that
// the tree extends the last checkpoint stored for its origin, however the
// trail was cut; a checkpoint of another origin does not bind it.
func TestExtendsLastCheckpoint(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name      string
		first     int // records when the checkpoint is stored
		tamper    []string
		more      int // records appended after the tampering
		truncated bool
		want      string // in the reason; "" for success
	}{
		{"intact", 20, nil, 5, false, ""},
		{"nothing added", 20, nil, 0, false, ""},
		{"cut", 20, []string{`DELETE FROM audit WHERE seq > 18`}, 0, true, "records 19 to 20 were removed"},
		{"cut and regrown past it", 20, []string{`DELETE FROM audit WHERE seq > 18`}, 5, false, "does not extend the last checkpoint signed for log.example/a, of 20 records"},
		{"cut and regrown to its size", 20, []string{`DELETE FROM audit WHERE seq > 18`}, 2, false, "REWRITTEN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t)
			appendN(t, db, c.first)
			root, err := db.TreeRoot(ctx, uint64(c.first))
			if err != nil {
				t.Fatal(err)
			}
			if err := db.SaveCheckpoint(ctx, "log.example/a", uint64(c.first), root, "note"); err != nil {
				t.Fatal(err)
			}
			// Another origin's larger checkpoint is not this signer's.
			if err := db.SaveCheckpoint(ctx, "log.example/b", 1000, root, "note"); err != nil {
				t.Fatal(err)
			}
			if c.tamper != nil {
				db.Close()
				vtTamper(t, db, c.tamper...)
				if db, err = Open(ctx, db.Path); err != nil {
					t.Fatal(err)
				}
				defer db.Close()
			}
			appendN(t, db, c.more)
			size, err := db.TreeSize(ctx)
			if err != nil {
				t.Fatal(err)
			}
			now, err := db.TreeRoot(ctx, size)
			if err != nil {
				t.Fatal(err)
			}
			err = db.ExtendsLastCheckpoint(ctx, "log.example/a", size, now)
			if c.want == "" {
				if err != nil {
					t.Fatalf("ExtendsLastCheckpoint: %v", err)
				}
				return
			}
			var e *ExtendError
			if !errors.As(err, &e) || e.Truncated != c.truncated || !strings.Contains(e.Reason, c.want) {
				t.Fatalf("ExtendsLastCheckpoint = %v, want an ExtendError, truncated %v, reason with %q", err, c.truncated, c.want)
			}
		})
	}
	db := openTest(t)
	appendN(t, db, 3)
	root, _ := db.TreeRoot(ctx, 3)
	if err := db.ExtendsLastCheckpoint(ctx, "log.example/new", 3, root); err != nil {
		t.Fatalf("no checkpoint stored yet: %v", err)
	}
}

// TestMerkleQueryPlans checks that the tree's statements search by key:
// an append by a process that did not write the head (it reads the range),
// proofs, roots, the checkpointer's question and the check at open.
func TestMerkleQueryPlans(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	appendN(t, db, 40)
	path := db.Path
	db.Close()
	stop := recordQueries(path)
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	appendAll(t, db, []*Record{{Agent: "a", Tool: "get_order", Phase: PhaseAttempt}})
	if _, err := db.InclusionProof(ctx, 5, 41); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ConsistencyProof(ctx, 13, 41); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TreeRoot(ctx, 29); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveCheckpoint(ctx, "o", 41, make([]byte, 32), "note"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.LatestCheckpoint(ctx, "o"); err != nil {
		t.Fatal(err)
	}
	queries := stop()
	merkle := 0
	for _, q := range queries {
		if strings.Contains(q.query, "merkle_nodes") {
			merkle++
		}
		bad, err := scans(ctx, db, q)
		if err != nil {
			t.Fatalf("%s: %v", q.query, err)
		}
		if len(bad) > 0 {
			t.Errorf("%s\n  scans a table that grows: %s", strings.Join(strings.Fields(q.query), " "), strings.Join(bad, "; "))
		}
	}
	if merkle < 4 {
		t.Fatalf("only %d statements on merkle_nodes were recorded: the test does not reach them", merkle)
	}
}

// TestMerkleAppendOrderMigration runs migration 0019 on a tree stored the
// way 0016 keyed it, (level, idx), and checks that it keeps every node at
// pos = (idx + 1) << level with its hash: a wrong shift would still open
// (repairTree rebuilds a tree that does not match), so the rows are
// compared, not just the root.
func TestMerkleAppendOrderMigration(t *testing.T) {
	db := openTest(t)
	appendN(t, db, 37)
	checkTree(t, db, 37)
	nodes := func(raw *sql.DB) map[[2]int64]string {
		rows, err := raw.Query(`SELECT pos, level, hex(hash) FROM merkle_nodes`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[[2]int64]string{}
		for rows.Next() {
			var pos, level int64
			var h string
			if err := rows.Scan(&pos, &level, &h); err != nil {
				t.Fatal(err)
			}
			got[[2]int64{pos, level}] = h
		}
		return got
	}
	raw, err := sql.Open("sqlite", DSN(db.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	want := nodes(raw)
	// 37 leaves complete 36 inner nodes (one fewer than the leaves per
	// perfect subtree: 32 + 4 + 1 leaves, 31 + 3 + 0 inner).
	if len(want) != 37+34 {
		t.Fatalf("%d nodes stored for 37 records, want %d", len(want), 37+34)
	}
	// The layout before 0019, with the nodes it held.
	for _, s := range []string{
		`CREATE TABLE merkle_nodes_0016 (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID`,
		`INSERT INTO merkle_nodes_0016 SELECT level, (pos >> level) - 1, hash FROM merkle_nodes`,
		`DROP TABLE merkle_nodes`,
		`ALTER TABLE merkle_nodes_0016 RENAME TO merkle_nodes`,
	} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	body, err := migrationFS.ReadFile("migrations/sqlite/0019_merkle_append_order.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(string(body)); err != nil {
		t.Fatalf("migration 0019: %v", err)
	}
	got := nodes(raw)
	if len(got) != len(want) {
		t.Fatalf("%d nodes after the migration, %d before", len(got), len(want))
	}
	for k, h := range want {
		if got[k] != h {
			t.Fatalf("node at pos %d, level %d: %q after the migration, %q before", k[0], k[1], got[k], h)
		}
	}
}

// TestMerkleTreeTrailsAppends: on SQLite an append does not write its tree
// nodes (the attempt's commit is the one an agent waits for); a later
// commit stores them, from the leaves computed when the records were
// appended where this process appended them and from the rows where
// another did, and every reader of the tree sees it caught up.
func TestMerkleTreeTrailsAppends(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	open := func() *DB {
		t.Helper()
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	stored := func() uint64 {
		t.Helper()
		raw, err := sql.Open("sqlite", DSN(path))
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		size, err := storedTreeSize(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		return size
	}
	a := open()
	appendN(t, a, 40) // urgent appends, fewer than indexEvery: nothing stores the tree
	if got := stored(); got >= 40 {
		t.Fatalf("the stored tree holds %d of 40 records right after they were appended: appends still write it", got)
	}
	checkTree(t, a, 40) // its readers catch it up first

	// b opens the file as another process would, and both append; each
	// stores the other's records from the rows.
	b := open()
	appendN(t, b, 12)
	appendN(t, a, 12)
	appendN(t, b, 12)
	checkTree(t, a, 76)
	appendN(t, b, 8)
	if got := stored(); got != 76 {
		t.Fatalf("the stored tree holds %d records, want 76 (b's last 8 not yet)", got)
	}
	// Closing stores what the process appended.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := stored(); got != 84 {
		t.Fatalf("after b closed, the stored tree holds %d records, want 84", got)
	}
	checkTree(t, a, 84)

	// A record rewritten before its leaf is stored, its chain hash left as
	// it was: the tree keeps the leaf of the record as appended, so a check
	// against it names the record.
	appendN(t, a, 5)
	var leaf []byte
	err := a.Records(ctx, Filter{AfterSeq: 86}, func(r *Record) error {
		leaf = attest.LeafHash(r.LeafData())
		return errStopWalk
	})
	if err != nil && !errors.Is(err, errStopWalk) {
		t.Fatal(err)
	}
	vtTamper(t, a, `UPDATE audit SET agent = 'mallory' WHERE seq = 87`)
	if size, err := a.TreeSize(ctx); err != nil || size != 89 {
		t.Fatalf("tree size %d (%v), want 89", size, err)
	}
	got, err := a.StoredLeaf(ctx, 86)
	if err != nil || !bytes.Equal(got, leaf) {
		t.Fatalf("stored leaf of record 87: %x (%v), want the appended record's %x", got, err, leaf)
	}
	if seq := a.firstRewritten(ctx, 89); seq != 87 {
		t.Fatalf("firstRewritten named record %d, want 87", seq)
	}
}
