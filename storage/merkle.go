package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate/attest"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

// The Merkle tree over the audit trail (attest, docs/attestation.md). Leaf
// i is record seq i+1; merkle_nodes holds every node rooting a perfect
// subtree, keyed by the seq of the record that completes it (pos, nodePos)
// so that the nodes of consecutive records share a page
// (migrations/sqlite/0019).
//
// On SQLite the nodes are not written in the transaction that appends a
// record: that is the attempt's, which the agent waits for, and the leaf
// and its nodes cost it 1.4 of its 7.7 pages (TestPagesPerWrite). The
// writer computes the leaf from the record as it appends it (the witness:
// what was recorded, whatever the row says later) and keeps it in memory
// (DB.leaves); growTree stores a run of them in a commit nobody waits for,
// with audit_index's (writer.go indexAudit), or before anyone reads the
// tree (treeUp). Records another process appended, or this one appended
// and did not store before it died, are hashed from their rows, as a
// database from before the tree always was. So the stored tree trails the
// trail by at most indexEvery of this process's records, every reader of
// roots and proofs sees it caught up, and it stays what it always was:
// derived data that no check trusts alone.
//
// On PostgreSQL each append still writes its nodes in its own transaction
// (appendLeaf): its replicas interleave appends record by record, so each
// would mostly store the others' leaves from their rows, and its commits
// were not measured to gain from it (like audit_index, SQLite only). Appending needs the compact
// range of the tree (the roots of its perfect subtrees, at most one per
// level); the writer keeps the last one in memory (DB.tree), keyed by the
// chain head it belongs to, so an append normally reads nothing and writes
// two nodes on average.

var rangeFactory = &compact.RangeFactory{Hash: attest.Hasher.HashChildren}

// treeState is the compact range of the first seq records, whose last
// record has chain hash hash. The chain hash fixes every record before it,
// so it fixes the range too.
type treeState struct {
	seq  int64
	hash string
	rng  *compact.Range
}

// LeafData is the record's Merkle leaf encoding (attest.LeafData): its seq,
// then the fields its chain hash covers, with args and attrs as compact
// JSON, which is how the export writes them.
func (r *Record) LeafData() []byte {
	c := *r
	if len(c.Changes) > 0 {
		// Stored as written; the JSON export prints it compacted.
		c.Changes = json.RawMessage(compactJSON(string(c.Changes)))
	}
	f := c.hashed()
	f[3], f[4] = compactJSON(f[3]), compactJSON(f[4])
	return attest.LeafData(r.Seq, f)
}

func compactJSON(s string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return s
	}
	return b.String()
}

// LeafIndex is a stored record's index in the Merkle tree: seq minus one
// (0 for a record not yet stored).
func (r *Record) LeafIndex() uint64 {
	if r.Seq < 1 {
		return 0
	}
	return uint64(r.Seq - 1)
}

// ExportedLeaf reads one record as `audit export` writes it (JSON) and
// returns its seq and leaf encoding: what an outside verifier recomputes.
//
// The leaf is computed from the record json.Unmarshal decodes, and that
// matches keys in any case, keeps the last of duplicate keys and skips
// unknown ones, where jq or a SIEM may read another value ("decision":
// "deny" followed by "Decision":"allow"). So only the bytes the export
// writes for the decoded record are accepted (whitespace aside): whatever
// a reader sees in them is what the leaf covers.
func ExportedLeaf(b json.RawMessage) (int64, []byte, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, nil, err
	}
	canon, err := r.MarshalJSON()
	if err != nil {
		return 0, nil, err
	}
	var got bytes.Buffer
	if err := json.Compact(&got, b); err != nil {
		return 0, nil, err
	}
	if !bytes.Equal(got.Bytes(), canon) {
		return 0, nil, errNotExported
	}
	return r.Seq, r.LeafData(), nil
}

var errNotExported = errors.New("it is not written as `mandate audit export` writes it (a field repeated, in another case, unknown or missing, or a value re-encoded): it was altered after export")

// UnmarshalJSON reads the export format that MarshalJSON writes, duration
// in microseconds included.
func (r *Record) UnmarshalJSON(b []byte) error {
	type plain Record
	var v struct {
		plain
		Duration int64 `json:"duration"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Record(v.plain)
	if string(r.Changes) == "null" {
		r.Changes = nil // the export writes a record without changes as null
	}
	r.Duration = time.Duration(v.Duration) * time.Microsecond
	return nil
}

// witnessed is what a SQLite writer appended and the stored tree does not
// hold yet: each record's leaf, computed from the record as appended, under
// its seq and with its chain hash (a record rolled back and another
// appended at its seq has another hash, so its leaf is not taken). broken
// is set once the tree cannot be built (a gap in the trail's seq): from
// then on appends fail closed, as they did when each one grew the tree.
type witnessed struct {
	mu     sync.Mutex
	leaves map[int64]witness
	broken error
}

type witness struct {
	hash string // the record's chain hash
	leaf []byte
}

// add keeps r's leaf until growTree stores it; it refuses the append once
// the tree is known to be broken.
func (w *witnessed) add(r *Record) error {
	leaf := attest.LeafHash(r.LeafData())
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.broken
	}
	if w.leaves == nil {
		w.leaves = map[int64]witness{}
	}
	w.leaves[r.Seq] = witness{r.Hash, leaf}
	return nil
}

// leaf is the leaf witnessed for the record at seq with chain hash hash,
// nil if none was.
func (w *witnessed) leaf(seq int64, hash string) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l, ok := w.leaves[seq]; ok && l.hash == hash {
		return l.leaf
	}
	return nil
}

// stored forgets the leaves of the first size records: the tree holds them.
func (w *witnessed) stored(size uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for seq := range w.leaves {
		if seq <= int64(size) {
			delete(w.leaves, seq)
		}
	}
}

func (w *witnessed) pending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.leaves) > 0
}

func (w *witnessed) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.broken = err
}

// growTree brings the stored tree up to the trail's head inside tx, a
// write: from the leaves this process witnessed where it has them all,
// else from the rows (catchUp). SQLite only.
func (db *DB) growTree(ctx context.Context, tx *Tx) error {
	var head int64
	if tx.head != nil {
		head = tx.head.seq
	} else {
		var err error
		if head, err = auditHead(ctx, tx); err != nil {
			return err
		}
	}
	size, err := storedTreeSize(ctx, tx)
	if err != nil {
		return err
	}
	if size >= uint64(head) {
		db.leaves.stored(size) // more than head is repairTree's to mend
		return nil
	}
	rng, err := loadRange(ctx, tx, size)
	if err != nil {
		return err
	}
	var leaves [][]byte
	if rng != nil { // else catchUp starts the tree over
		if leaves, err = db.witnessedAfter(ctx, tx, size, head); err != nil {
			return err
		}
	}
	if leaves == nil {
		_, err = catchUp(ctx, tx, head)
	} else {
		err = storeLeaves(ctx, tx, rng, leaves)
	}
	if err != nil {
		var broken *treeBrokenError
		if errors.As(err, &broken) {
			db.leaves.fail(err)
		}
		return err
	}
	db.leaves.stored(uint64(head))
	return nil
}

// witnessedAfter is the witnessed leaves of records size+1 to head, read
// by their chain hashes alone; nil if one of them was not witnessed.
func (db *DB) witnessedAfter(ctx context.Context, tx *Tx, size uint64, head int64) ([][]byte, error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq, hash FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq`, int64(size), head)
	if err != nil {
		return nil, unavailable("read audit hashes", err)
	}
	defer rows.Close()
	leaves := make([][]byte, 0, head-int64(size))
	for rows.Next() {
		var seq int64
		var hash string
		if err := rows.Scan(&seq, &hash); err != nil {
			return nil, unavailable("read audit hashes", err)
		}
		leaf := db.leaves.leaf(seq, hash)
		if leaf == nil || seq != int64(size)+int64(len(leaves))+1 {
			return nil, nil // catchUp reads the rows, and names a gap
		}
		leaves = append(leaves, leaf)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("read audit hashes", err)
	}
	if int64(len(leaves)) != head-int64(size) {
		return nil, nil
	}
	return leaves, nil
}

// treeUp makes the stored tree hold every record before it is read: on
// SQLite it trails the appends (growTree). A tree that cannot be built is
// read as it is stored, as before the trail broke.
func (db *DB) treeUp(ctx context.Context) error {
	if db.postgres {
		return nil
	}
	head, err := auditHead(ctx, db.db)
	if err != nil {
		return err
	}
	size, err := storedTreeSize(ctx, db.db)
	if err != nil || size >= uint64(head) {
		return err
	}
	err = db.writeLazy(func(tx *Tx) error { return db.growTree(ctx, tx) })
	var broken *treeBrokenError
	if errors.As(err, &broken) {
		return nil
	}
	return err
}

// flushLeaves stores the leaves this process witnessed before it closes
// the database, so the tree keeps them rather than hash the rows again at
// the next open. A failure leaves that to the next open.
func (db *DB) flushLeaves() {
	db.closeMu.RLock()
	closed := db.closed
	db.closeMu.RUnlock()
	if closed || db.postgres || !db.leaves.pending() {
		return
	}
	_ = db.writeLazy(func(tx *Tx) error { return db.growTree(context.Background(), tx) })
}

// appendLeaf adds r, just inserted by appendRecord in tx, to the tree
// (PostgreSQL; SQLite witnesses it and growTree stores it later).
func appendLeaf(ctx context.Context, tx *Tx, r *Record) error {
	rng, err := tx.db.rangeAt(ctx, tx, r.Seq-1, r.PrevHash)
	if err != nil {
		return err
	}
	next, err := rangeFactory.NewRange(0, rng.End(), append([][]byte(nil), rng.Hashes()...))
	if err != nil {
		return err
	}
	// One leaf completes the leaf node and one more on average: one
	// statement.
	if err := storeLeaves(ctx, tx, next, [][]byte{attest.LeafHash(r.LeafData())}); err != nil {
		return err
	}
	tx.db.tree.Store(&treeState{seq: r.Seq, hash: r.Hash, rng: next})
	return nil
}

// storeLeaves appends leaves to rng and stores the nodes they complete,
// nodesPerInsert to a statement and the rest in one more: on SQLite each
// statement costs about as much as the nodes it inserts, and the two
// sizes a run mostly needs stay prepared.
func storeLeaves(ctx context.Context, tx *Tx, rng *compact.Range, leaves [][]byte) error {
	var args []any
	for _, leaf := range leaves {
		err := rng.Append(leaf, func(id compact.NodeID, h []byte) {
			args = append(args, nodePos(id), int64(id.Level), h)
		})
		if err != nil {
			return err
		}
	}
	for len(args) > 0 {
		n := min(len(args)/3, nodesPerInsert)
		if _, err := tx.ExecContext(ctx, insertNodes[n], args[:3*n]...); err != nil {
			return err
		}
		args = args[3*n:]
	}
	return nil
}

// nodesPerInsert is the most nodes storeLeaves inserts in one statement.
const nodesPerInsert = 64

// insertNodes[n] inserts n nodes, up to nodesPerInsert.
var insertNodes = func() []string {
	q := make([]string, nodesPerInsert+1)
	for n := 1; n < len(q); n++ {
		// ON CONFLICT rather than INSERT OR REPLACE: the same on both engines.
		q[n] = `INSERT INTO merkle_nodes (pos, level, hash) VALUES (?, ?, ?)` + strings.Repeat(`, (?, ?, ?)`, n-1) +
			` ON CONFLICT (pos, level) DO UPDATE SET hash = excluded.hash`
	}
	return q
}()

// nodePos is where merkle_nodes keeps a node: the seq of the record that
// completes it, (index + 1) << level. Every node one append completes has
// that record's seq, so they sit together at the end of the table's
// B-tree, and the tree's size is the largest pos.
func nodePos(id compact.NodeID) int64 { return int64((id.Index + 1) << id.Level) }

// nodeAt is the node that merkle_nodes keeps at pos and level.
func nodeAt(pos, level int64) compact.NodeID {
	return compact.NewNodeID(uint(level), uint64(pos>>level)-1)
}

// rangeAt returns the compact range of the first seq records, whose last
// has chain hash head: from memory when the writer appended that head
// itself, else from the stored nodes, catching the tree up from the audit
// rows when they are missing (a database written by a version without the
// tree, or a tree trimmed by repair).
func (db *DB) rangeAt(ctx context.Context, tx *Tx, seq int64, head string) (*compact.Range, error) {
	if st := db.tree.Load(); st != nil && st.seq == seq && st.hash == head {
		return st.rng, nil
	}
	rng, err := loadRange(ctx, tx, uint64(seq))
	if err != nil || rng != nil {
		return rng, err
	}
	return catchUp(ctx, tx, seq)
}

// queryer is what reading the tree needs: the pool, or a transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// nodeHashes reads the stored hashes of ids in one statement (a proof
// needs about log2(n) of them); ok is false if one is missing.
func nodeHashes(ctx context.Context, q queryer, ids []compact.NodeID) (hashes [][]byte, ok bool, err error) {
	if len(ids) == 0 {
		return [][]byte{}, true, nil
	}
	args := make([]any, 0, 2*len(ids))
	for _, id := range ids {
		args = append(args, nodePos(id), int64(id.Level))
	}
	// An OR of key equalities plans as one primary-key search per node;
	// older SQLite (the sqlite3 shell here) scans for (pos, level) IN (VALUES …).
	rows, err := q.QueryContext(ctx, `SELECT pos, level, hash FROM merkle_nodes WHERE (pos = ? AND level = ?)`+
		strings.Repeat(` OR (pos = ? AND level = ?)`, len(ids)-1), args...)
	if err != nil {
		return nil, false, unavailable("read merkle tree", err)
	}
	defer rows.Close()
	got := make(map[compact.NodeID][]byte, len(ids))
	for rows.Next() {
		var pos, level int64
		var h []byte
		if err := rows.Scan(&pos, &level, &h); err != nil {
			return nil, false, unavailable("read merkle tree", err)
		}
		got[nodeAt(pos, level)] = h
	}
	if err := rows.Err(); err != nil {
		return nil, false, unavailable("read merkle tree", err)
	}
	hashes = make([][]byte, len(ids))
	for i, id := range ids {
		if hashes[i] = got[id]; hashes[i] == nil {
			return nil, false, nil
		}
	}
	return hashes, true, nil
}

// loadRange reads the compact range [0, size) from the stored nodes; nil if
// the tree does not hold them.
func loadRange(ctx context.Context, q queryer, size uint64) (*compact.Range, error) {
	hashes, ok, err := nodeHashes(ctx, q, compact.RangeNodes(0, size, nil))
	if err != nil || !ok {
		return nil, err
	}
	return rangeFactory.NewRange(0, size, hashes)
}

// storedTreeSize is how many leaves the stored tree holds: the largest pos,
// which is its last leaf's (a leaf at index i has pos i+1, and no node
// completes before its last leaf). A tree damaged so that the largest pos
// has no leaf fails lastLeafMatches and is rebuilt (repairTree).
func storedTreeSize(ctx context.Context, q queryer) (uint64, error) {
	var n sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(pos) FROM merkle_nodes`).Scan(&n); err != nil {
		return 0, unavailable("read merkle tree", err)
	}
	return uint64(n.Int64), nil
}

// catchUp makes the stored tree hold the leaves of records 1 to seq, from
// the audit rows, and returns its range: it continues from the stored tree
// where that holds a complete range, else it starts over.
func catchUp(ctx context.Context, tx *Tx, seq int64) (*compact.Range, error) {
	size, err := storedTreeSize(ctx, tx)
	if err != nil {
		return nil, err
	}
	size = min(size, uint64(seq))
	rng, err := loadRange(ctx, tx, size)
	if err != nil {
		return nil, err
	}
	if rng == nil {
		rng = rangeFactory.NewEmptyRange(0)
	}
	var leaves [][]byte
	err = records(ctx, tx, Filter{AfterSeq: int64(rng.End())}, func(r *Record) error {
		if r.Seq > seq {
			return errStopWalk
		}
		if uint64(r.Seq) != rng.End()+uint64(len(leaves))+1 {
			return &treeBrokenError{fmt.Sprintf("audit record %d follows record %d: the chain is broken, so the Merkle tree cannot be built; run `mandate audit verify`", r.Seq, rng.End()+uint64(len(leaves)))}
		}
		leaf := tx.db.leaves.leaf(r.Seq, r.Hash) // as this process appended it
		if leaf == nil {
			leaf = attest.LeafHash(r.LeafData())
		}
		leaves = append(leaves, leaf)
		return nil
	}, tx.db.postgres)
	if err != nil && !errors.Is(err, errStopWalk) {
		return nil, err
	}
	if err := storeLeaves(ctx, tx, rng, leaves); err != nil {
		return nil, err
	}
	if rng.End() != uint64(seq) {
		return nil, fmt.Errorf("the tree reached %d records, the audit trail has %d", rng.End(), seq)
	}
	return rng, nil
}

var errStopWalk = errors.New("stop")

// treeBrokenError is a trail whose seq numbers have a gap: leaf i must be
// record i+1, so no tree fits it. Opening the database still succeeds, so
// that `audit verify` can say what is wrong; appending fails closed.
type treeBrokenError struct{ reason string }

func (e *treeBrokenError) Error() string { return e.reason }

// repairTree brings the stored tree in line with the audit rows when a
// database is opened: built for the records written before it existed,
// trimmed when it holds more leaves than there are records, and rebuilt
// from the rows when its last leaf is not the last record's. Writes are in
// the same transaction as each record, so after a crash (even kill -9) it
// normally finds nothing to do, at the cost of a few reads.
func (db *DB) repairTree(ctx context.Context) error {
	ok, err := db.treeMatches(ctx, db.db)
	if err != nil || ok {
		return err
	}
	err = db.write(func(tx *Tx) error {
		if ok, err := db.treeMatches(ctx, tx); err != nil || ok {
			return err // another process repaired it first
		}
		head, err := auditHead(ctx, tx)
		if err != nil {
			return err
		}
		size, err := storedTreeSize(ctx, tx)
		if err != nil {
			return err
		}
		if size > uint64(head) {
			// Drop every node that covers a leaf past the last record.
			if _, err := tx.ExecContext(ctx, `DELETE FROM merkle_nodes WHERE pos > ?`, head); err != nil {
				return unavailable("trim merkle tree", err)
			}
		}
		if ok, err := lastLeafMatches(ctx, tx, min(size, uint64(head))); err != nil {
			return err
		} else if !ok {
			// The stored leaves are not these records': start over.
			if _, err := tx.ExecContext(ctx, `DELETE FROM merkle_nodes`); err != nil {
				return unavailable("reset merkle tree", err)
			}
		}
		db.tree.Store(nil)
		_, err = catchUp(ctx, tx, head)
		return err
	})
	var broken *treeBrokenError
	if errors.As(err, &broken) {
		db.leaves.fail(err) // appends fail closed
		return nil          // the repair is rolled back; see treeBrokenError
	}
	return err
}

// treeMatches says whether the stored tree holds exactly the audit rows'
// leaves, judged by its size, its last leaf and a complete range.
func (db *DB) treeMatches(ctx context.Context, q queryer) (bool, error) {
	head, err := auditHead(ctx, q)
	if err != nil {
		return false, err
	}
	size, err := storedTreeSize(ctx, q)
	if err != nil || size != uint64(head) {
		return false, err
	}
	if ok, err := lastLeafMatches(ctx, q, size); err != nil || !ok {
		return false, err
	}
	rng, err := loadRange(ctx, q, size)
	return rng != nil, err
}

// auditHead is the last record's seq, 0 for an empty trail. A bare MAX is
// answered from the primary key without a scan.
func auditHead(ctx context.Context, q queryer) (int64, error) {
	var n sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(seq) FROM audit`).Scan(&n); err != nil {
		return 0, unavailable("read audit head", err)
	}
	return n.Int64, nil
}

// lastLeafMatches says whether leaf size-1 is the leaf of record size.
func lastLeafMatches(ctx context.Context, q queryer, size uint64) (bool, error) {
	if size == 0 {
		return true, nil
	}
	var last []byte
	found := false
	err := records(ctx, q, Filter{AfterSeq: int64(size) - 1}, func(r *Record) error {
		found = r.Seq == int64(size)
		last = attest.LeafHash(r.LeafData())
		return errStopWalk
	}, false) // no Since: the engine makes no difference
	if err != nil && !errors.Is(err, errStopWalk) {
		return false, err
	}
	stored, ok, err := nodeHashes(ctx, q, []compact.NodeID{compact.NewNodeID(0, size-1)})
	if err != nil || !ok || !found {
		return false, err
	}
	return bytes.Equal(stored[0], last), nil
}

// TreeSize is how many records the Merkle tree holds.
func (db *DB) TreeSize(ctx context.Context) (uint64, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	if err := db.treeUp(ctx); err != nil {
		return 0, err
	}
	return storedTreeSize(ctx, db.db)
}

// TreeRoot is the root hash of the tree of the first size records, from
// the stored nodes: O(log size) reads.
func (db *DB) TreeRoot(ctx context.Context, size uint64) ([]byte, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	if err := db.treeUp(ctx); err != nil {
		return nil, err
	}
	if size == 0 {
		return attest.Hasher.EmptyRoot(), nil
	}
	rng, err := loadRange(ctx, db.db, size)
	if err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, treeTooSmall(ctx, db, size)
	}
	return rng.GetRootHash(nil)
}

// InclusionProof is the RFC 6962 audit path of leaf index in the tree of
// the first size records, from the stored nodes.
func (db *DB) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	if err := db.treeUp(ctx); err != nil {
		return nil, err
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return db.rehash(ctx, nodes, size)
}

// ConsistencyProof is the RFC 6962 proof that the tree of the first size2
// records extends the tree of the first size1, from the stored nodes.
func (db *DB) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	if err := db.treeUp(ctx); err != nil {
		return nil, err
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	return db.rehash(ctx, nodes, size2)
}

func (db *DB) rehash(ctx context.Context, nodes proof.Nodes, size uint64) ([][]byte, error) {
	hashes, ok, err := nodeHashes(ctx, db.db, nodes.IDs)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, treeTooSmall(ctx, db, size)
	}
	return nodes.Rehash(hashes, attest.Hasher.HashChildren)
}

func treeTooSmall(ctx context.Context, db *DB, size uint64) error {
	have, err := db.TreeSize(ctx)
	if err != nil {
		return err
	}
	return fmt.Errorf("the Merkle tree holds %d records, not the %d asked for", have, size)
}

// LeafHashes calls fn with the leaf hash of every audit record, in order,
// recomputed from the rows as stored now (not read from the tree).
func (db *DB) LeafHashes(ctx context.Context, fn func(seq int64, leaf []byte) error) error {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	return db.Records(ctx, Filter{}, func(r *Record) error { return fn(r.Seq, attest.LeafHash(r.LeafData())) })
}

// StoredLeaf is the leaf hash the tree holds at index, or nil.
func (db *DB) StoredLeaf(ctx context.Context, index uint64) ([]byte, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	h, ok, err := nodeHashes(ctx, db.db, []compact.NodeID{compact.NewNodeID(0, index)})
	if err != nil || !ok {
		return nil, err
	}
	return h[0], nil
}
