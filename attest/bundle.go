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
// of known, then for every entry that its leaf index is its seq minus one,
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
	if len(b.Entries) == 0 {
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
