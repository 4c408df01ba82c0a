package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
)

// BundleFormat names the proof bundle's format and version.
const BundleFormat = "mandate-proof-bundle/v1"

// Bundle proves that some audit records are in the trail: each record with
// its leaf index and an inclusion proof against a signed checkpoint, which
// it carries. It is self-contained: checking it needs only the verifier key.
type Bundle struct {
	Format     string  `json:"format"`
	Checkpoint string  `json:"checkpoint"` // the signed note, as text
	Entries    []Entry `json:"entries"`
	// Consistency, when present, proves that the tree of Checkpoint
	// extends an older one the reader holds (one published earlier):
	// nothing recorded before it was removed or rewritten since.
	Consistency *Consistency `json:"consistency,omitempty"`
}

// Consistency is an RFC 6962 consistency proof (RFC 9162 section 2.1.4)
// from the older tree of FromSize records to the bundle's checkpoint.
type Consistency struct {
	FromSize uint64   `json:"from_size"`
	Proof    []string `json:"proof"` // base64 hashes
}

// Entry is one record in a Bundle.
type Entry struct {
	LeafIndex uint64          `json:"leaf_index"`      // the record's seq minus one
	Record    json.RawMessage `json:"record"`          // as `mandate audit export` writes it
	Inclusion []string        `json:"inclusion_proof"` // RFC 6962 audit path, base64, leaf to root
}

// LeafFunc decodes an exported record and returns its seq and LeafData.
type LeafFunc func(record json.RawMessage) (seq int64, data []byte, err error)

// EncodeProof writes hashes as the bundle does: standard base64.
func EncodeProof(hashes [][]byte) []string {
	out := make([]string, len(hashes))
	for i, h := range hashes {
		out[i] = base64.StdEncoding.EncodeToString(h)
	}
	return out
}

// VerifyBundle checks a bundle offline: the checkpoint's signature by one
// of known, then for every entry that its leaf index is its seq minus one
// and greater than the entry before's (each record once, in chain order),
// and that the leaf recomputed from the record is included in the
// checkpoint's tree at that index. It returns the checkpoint and the
// signing key's name, or the first failure, naming the entry.
func VerifyBundle(b *Bundle, known note.Verifiers, leaf LeafFunc) (Checkpoint, string, error) {
	if b.Format != BundleFormat {
		return Checkpoint{}, "", fmt.Errorf("bundle format %q, want %q", b.Format, BundleFormat)
	}
	cp, signer, err := Open([]byte(b.Checkpoint), known)
	if err != nil {
		return Checkpoint{}, "", err
	}
	if len(b.Entries) == 0 && b.Consistency == nil {
		return Checkpoint{}, "", errors.New("the bundle holds no records")
	}
	for i, e := range b.Entries {
		seq, data, err := leaf(e.Record)
		if err != nil {
			return Checkpoint{}, "", fmt.Errorf("entry %d: the record cannot be read: %v", i+1, err)
		}
		if seq < 1 || uint64(seq-1) != e.LeafIndex {
			return Checkpoint{}, "", fmt.Errorf("entry %d: leaf index %d does not match the record's seq %d (the leaf index is always seq-1): the index was altered", i+1, e.LeafIndex, seq)
		}
		if i > 0 && e.LeafIndex <= b.Entries[i-1].LeafIndex {
			return Checkpoint{}, "", fmt.Errorf("entry %d: leaf index %d does not follow the entry before's %d: entries are in chain order, each record once", i+1, e.LeafIndex, b.Entries[i-1].LeafIndex)
		}
		if e.LeafIndex >= cp.Size {
			return Checkpoint{}, "", fmt.Errorf("entry %d: record %d is not covered by the checkpoint, which holds %d records", i+1, seq, cp.Size)
		}
		path := make([][]byte, len(e.Inclusion))
		for j, s := range e.Inclusion {
			if path[j], err = base64.StdEncoding.DecodeString(s); err != nil || len(path[j]) != Hasher.Size() {
				return Checkpoint{}, "", fmt.Errorf("entry %d: inclusion proof hash %d is not %d bytes in base64", i+1, j+1, Hasher.Size())
			}
		}
		root, err := proof.RootFromInclusionProof(Hasher, e.LeafIndex, cp.Size, LeafHash(data), path)
		if err == nil && !bytes.Equal(root, cp.Root) {
			err = fmt.Errorf("the record and its proof lead to root %s, the checkpoint's is %s",
				base64.StdEncoding.EncodeToString(root), base64.StdEncoding.EncodeToString(cp.Root))
		}
		if err != nil {
			return Checkpoint{}, "", fmt.Errorf("entry %d: record %d is not in the signed tree of %d records at leaf index %d: the record, its leaf index or its proof was altered (%v)", i+1, seq, cp.Size, e.LeafIndex, err)
		}
	}
	return cp, signer, nil
}

// VerifyConsistency checks that the bundle's checkpoint cp (already opened
// by VerifyBundle) extends old, a checkpoint the reader holds and has opened
// with the keys they trust: same log, no fewer records, and the bundle's
// consistency proof leads from old's root to cp's. The reader's own copy of
// old is what counts: the bundle carries only the proof.
func VerifyConsistency(b *Bundle, old, cp Checkpoint) error {
	if old.Origin != cp.Origin {
		return fmt.Errorf("your checkpoint is of the log %q, the bundle's of %q", old.Origin, cp.Origin)
	}
	if old.Size > cp.Size {
		return fmt.Errorf("TRUNCATED: your checkpoint covers %d records, the bundle's newer checkpoint only %d: records %d to %d were removed", old.Size, cp.Size, cp.Size+1, old.Size)
	}
	if old.Size == cp.Size && bytes.Equal(old.Root, cp.Root) {
		return nil // the same tree: nothing to prove
	}
	if b.Consistency == nil {
		return fmt.Errorf("the bundle holds no consistency proof; ask for one made with `mandate audit prove --since-checkpoint` and your checkpoint of %d records", old.Size)
	}
	if b.Consistency.FromSize != old.Size {
		return fmt.Errorf("the bundle's consistency proof starts at %d records, your checkpoint covers %d: ask for one made with your checkpoint", b.Consistency.FromSize, old.Size)
	}
	path := make([][]byte, len(b.Consistency.Proof))
	for j, s := range b.Consistency.Proof {
		var err error
		if path[j], err = base64.StdEncoding.DecodeString(s); err != nil || len(path[j]) != Hasher.Size() {
			return fmt.Errorf("consistency proof hash %d is not %d bytes in base64", j+1, Hasher.Size())
		}
	}
	if err := proof.VerifyConsistency(Hasher, old.Size, cp.Size, path, old.Root, cp.Root); err != nil {
		return fmt.Errorf("REWRITTEN: the signed tree of %d records does not extend your checkpoint of %d records: a record it covered was removed or rewritten, or the proof was altered (%v)", cp.Size, old.Size, err)
	}
	return nil
}
