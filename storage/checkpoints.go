package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/attest"
	"github.com/transparency-dev/merkle/proof"
)

// StoredCheckpoint is a signed checkpoint kept in the database.
type StoredCheckpoint struct {
	Origin string
	Size   uint64
	Root   string // standard base64
	Note   string // the signed note, as published
}

// SaveCheckpoint keeps a signed checkpoint. One already stored for the same
// origin and size is kept as it is: with the same key it is the same note.
func (db *DB) SaveCheckpoint(ctx context.Context, origin string, size uint64, root []byte, note string) error {
	return db.writeLazy(func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO checkpoints (origin, size, root_hash, note, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin, size) DO NOTHING`,
			origin, int64(size), base64.StdEncoding.EncodeToString(root), note, timeText(db.Now()))
		if err != nil {
			return unavailable("save checkpoint", err)
		}
		return nil
	})
}

// LatestCheckpoint is the stored checkpoint of the largest tree, of origin
// if it is set; a not_found error when there is none.
func (db *DB) LatestCheckpoint(ctx context.Context, origin string) (StoredCheckpoint, error) {
	var c StoredCheckpoint
	var size int64
	// With an origin this is a primary-key search (the checkpointer asks
	// every interval); without one, the CLI's question, it scans.
	q, args := `SELECT origin, size, root_hash, note FROM checkpoints WHERE origin = ? ORDER BY size DESC LIMIT 1`, []any{origin}
	if origin == "" {
		q, args = `SELECT origin, size, root_hash, note FROM checkpoints ORDER BY size DESC, created_at DESC LIMIT 1`, nil
	}
	err := db.db.QueryRowContext(ctx, q, args...).Scan(&c.Origin, &size, &c.Root, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return c, mandate.Errorf(mandate.ENOTFOUND, "no checkpoint has been signed yet: run `mandate serve --checkpoint-key FILE` or `mandate audit checkpoint --key FILE`")
	}
	if err != nil {
		return c, unavailable("read checkpoints", err)
	}
	c.Size = uint64(size)
	return c, nil
}

// ExtendError says how the trail fails to extend a checkpoint.
type ExtendError struct {
	Size      uint64 // the checkpoint's size
	Have      uint64 // records in the trail now
	Truncated bool   // fewer records than the checkpoint covers
	Seq       int64  // the first rewritten record, when it can be named
	Reason    string
}

func (e *ExtendError) Error() string { return e.Reason }

// CheckExtends proves that the trail as stored now extends the tree of an
// older checkpoint of size records with root root: nothing it covers was
// removed or rewritten. It recomputes every leaf from the audit rows, since
// the stored tree is derived data that whoever rewrote a record could have
// left as it was, and checks the RFC 6962 consistency proof from the stored
// tree. It returns the trail's size; a failed check is an *ExtendError.
func (db *DB) CheckExtends(ctx context.Context, size uint64, root []byte) (uint64, error) {
	head, _, err := db.Head(ctx)
	if err != nil {
		return 0, err
	}
	n := uint64(head)
	if n < size {
		return n, &ExtendError{Size: size, Have: n, Truncated: true,
			Reason: fmt.Sprintf("TRUNCATED: the trail has %d records, but the checkpoint covers %d: records %d to %d were removed", n, size, n+1, size)}
	}
	rng := rangeFactory.NewEmptyRange(0)
	rowsRoot := attest.Hasher.EmptyRoot()
	err = db.LeafHashes(ctx, func(seq int64, leaf []byte) error {
		if err := rng.Append(leaf, nil); err != nil {
			return err
		}
		if rng.End() == size {
			rowsRoot, err = rng.GetRootHash(nil)
		}
		return err
	})
	if err != nil {
		return n, err
	}
	if !bytes.Equal(rowsRoot, root) {
		e := &ExtendError{Size: size, Have: n, Seq: db.firstRewritten(ctx, size)}
		e.Reason = fmt.Sprintf("REWRITTEN: the first %d records as stored now do not hash to the checkpoint's root: ", size)
		if e.Seq > 0 {
			e.Reason += fmt.Sprintf("record %d differs from what was recorded when it was appended", e.Seq)
		} else {
			e.Reason += "a record it covers was removed, inserted or rewritten"
		}
		return n, e
	}
	nowRoot := attest.Hasher.EmptyRoot()
	if n > 0 {
		if nowRoot, err = rng.GetRootHash(nil); err != nil {
			return n, err
		}
	}
	stored, err := db.TreeRoot(ctx, n)
	if err != nil {
		return n, err
	}
	if !bytes.Equal(stored, nowRoot) {
		// The checkpoint's records are intact, but a later one is not what
		// the tree recorded when it was appended.
		e := &ExtendError{Size: size, Have: n, Seq: db.firstRewritten(ctx, n)}
		e.Reason = fmt.Sprintf("the first %d records match the checkpoint, but the stored Merkle tree disagrees with the rows after them", size)
		if e.Seq > 0 {
			e.Reason += fmt.Sprintf(": record %d differs from what was recorded when it was appended, so it was rewritten after the checkpoint", e.Seq)
		}
		return n, e
	}
	p, err := db.ConsistencyProof(ctx, size, n)
	if err != nil {
		return n, err
	}
	if err := proof.VerifyConsistency(attest.Hasher, size, n, p, root, stored); err != nil {
		return n, &ExtendError{Size: size, Have: n, Reason: fmt.Sprintf("the consistency proof from %d to %d records does not verify: %v", size, n, err)}
	}
	return n, nil
}

// firstRewritten is the first record before size whose leaf, recomputed
// from its row, is not the leaf stored when it was appended; 0 if none is
// (the tree was rebuilt from the rewritten rows).
func (db *DB) firstRewritten(ctx context.Context, size uint64) int64 {
	var found int64
	_ = db.LeafHashes(ctx, func(seq int64, leaf []byte) error {
		if uint64(seq) > size {
			return errStopWalk
		}
		stored, err := db.StoredLeaf(ctx, uint64(seq-1))
		if err == nil && stored != nil && !bytes.Equal(stored, leaf) {
			found = seq
			return errStopWalk
		}
		return nil
	})
	return found
}

// ExtendsLastCheckpoint checks that the tree of size records with root
// root, about to be signed for origin, extends the last checkpoint stored
// for origin: a key must never sign two histories, one of which drops or
// rewrites records the other holds. That happens when records are cut off
// the end of the trail (the tree is trimmed to match when the database is
// opened) and new ones appended in their place. It reads the stored tree
// only, O(log n), so serve's checkpointer can ask every interval;
// CheckExtends is the full check against the rows. A failed check is an
// *ExtendError; no checkpoint stored for origin passes.
func (db *DB) ExtendsLastCheckpoint(ctx context.Context, origin string, size uint64, root []byte) error {
	last, err := db.LatestCheckpoint(ctx, origin)
	if mandate.ErrorCode(err) == mandate.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	lastRoot, err := base64.StdEncoding.DecodeString(last.Root)
	if err != nil {
		return fmt.Errorf("the checkpoint of %s at size %d stored in the database has a root that is not base64", origin, last.Size)
	}
	if size < last.Size {
		return &ExtendError{Size: last.Size, Have: size, Truncated: true,
			Reason: fmt.Sprintf("TRUNCATED: the tree holds %d records, but the last checkpoint signed for %s covers %d: records %d to %d were removed", size, origin, last.Size, size+1, last.Size)}
	}
	p, err := db.ConsistencyProof(ctx, last.Size, size)
	if err != nil {
		return err
	}
	if err := proof.VerifyConsistency(attest.Hasher, last.Size, size, p, lastRoot, root); err != nil {
		return &ExtendError{Size: last.Size, Have: size,
			Reason: fmt.Sprintf("REWRITTEN: the tree of %d records does not extend the last checkpoint signed for %s, of %d records: a record it covers was removed or rewritten (records cut off the end and new ones appended in their place?)", size, origin, last.Size)}
	}
	return nil
}
