// Package attest makes the audit trail checkable by people who do not
// trust Mandate's database: a Merkle tree over the records (RFC 6962
// hashing), signed checkpoints of it in the C2SP tlog-checkpoint format, and
// inclusion and consistency proofs. Everything here is a pure function of
// records, hashes and keys; storage persists the tree and the checkpoints.
// docs/attestation.md is the specification an outside verifier follows.
package attest

import (
	"crypto"
	_ "crypto/sha256" // registers SHA-256 for the RFC 6962 hasher
	"encoding/binary"
	"strconv"

	"github.com/transparency-dev/merkle/rfc6962"
)

// Hasher is the tree's hash: RFC 6962 with SHA-256, the one Certificate
// Transparency and the Go checksum database use, so their tools apply.
var Hasher = rfc6962.New(crypto.SHA256)

// LeafData is the encoding of one audit record that its Merkle leaf hashes:
// the record's seq in decimal, then each field, every one prefixed by its
// length in bytes as an 8-byte little-endian number (as the chain hash
// encodes them). fields are the record's exported fields in the order
// docs/attestation.md gives. It holds neither the chain's prev_hash nor
// hash, nor anything secret, so anyone holding an exported record can
// recompute it, and a change to how the chain is hashed leaves the tree alone.
func LeafData(seq int64, fields []string) []byte {
	n := 8 + len(strconv.FormatInt(seq, 10))
	for _, f := range fields {
		n += 8 + len(f)
	}
	b := make([]byte, 0, n)
	put := func(s string) {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	put(strconv.FormatInt(seq, 10))
	for _, f := range fields {
		put(f)
	}
	return b
}

// LeafHash is the RFC 6962 leaf hash of data: SHA-256 of a zero byte and data.
func LeafHash(data []byte) []byte { return Hasher.HashLeaf(data) }
