package storage

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"

	"github.com/mandatehq/mandate"
)

// Keyed audit records. The plain chain hash is SHA-256 over public fields:
// anyone who can write the database can append or rewrite records with
// correct hashes. With an audit key (a secret kept outside the database),
// each record's chain hash is HMAC-SHA-256 under that key instead, over
// exactly what the plain hash covers, so a writer without the key cannot
// produce a record that verifies. The record's key_id column says which it
// is (empty: plain) and names the key without revealing it; key_id is
// itself hashed, so it cannot be flipped without breaking the record.
//
// Records before a key was introduced stay plain; a plain record after a
// keyed one is a downgrade and fails verification. Every process that
// writes the database must hold the same key: one with a different key, or
// none, refuses to append after a keyed head (fail closed).

// MinAuditKeyBytes is the least secret an audit key may hold: HMAC-SHA-256
// gains nothing beyond 32 bytes and loses strength below.
const MinAuditKeyBytes = 32

// AuditKey is the secret that turns chain hashes into MACs. Its bytes are
// never printed, logged or stored; ID is safe to show.
type AuditKey struct {
	secret []byte
	id     string
}

// NewAuditKey wraps a secret of at least MinAuditKeyBytes.
func NewAuditKey(secret []byte) (*AuditKey, error) {
	if len(secret) < MinAuditKeyBytes {
		return nil, mandate.Errorf(mandate.EINVALID, "an audit key must hold at least %d random bytes, not %d (make one with `mandate audit mackey --out FILE`)", MinAuditKeyBytes, len(secret))
	}
	// The id is a hash of the key under its own label, so it neither
	// reveals the key nor equals any MAC the key makes.
	sum := sha256.Sum256(append([]byte("mandate audit key id\x00"), secret...))
	return &AuditKey{secret: append([]byte(nil), secret...), id: hex.EncodeToString(sum[:8])}, nil
}

// ID names the key in records and messages: 16 hex digits.
func (k *AuditKey) ID() string { return k.id }

// String shows only the id, so a key printed by mistake leaks nothing.
func (k *AuditKey) String() string { return "audit key " + k.id }

// LoadAuditKey reads an audit key file: 64 or more hex digits (what
// `mandate audit mackey` writes, or `openssl rand -hex 32`), or at least 32
// raw bytes. The file must be readable by its owner only: a key others can
// read is not a secret, so it is refused rather than used.
func LoadAuditKey(path string) (*AuditKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("audit key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s: mode %04o lets others read it; make it readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	secret := b
	if t := strings.TrimSpace(string(b)); len(t) >= 2*MinAuditKeyBytes {
		if d, err := hex.DecodeString(t); err == nil {
			secret = d
		}
	}
	k, err := NewAuditKey(secret)
	if err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	return k, nil
}

// WithAuditKey makes the database chain every record it appends with k's
// MAC and lets Verify check keyed records. A nil k is no key.
func WithAuditKey(k *AuditKey) Option {
	return func(db *DB) { db.auditKey = k }
}

// AuditKeyFile is WithAuditKey for the key in the file at path, read with
// LoadAuditKey; "" is no key. Open fails if the file cannot be used, so a
// process configured with a key never writes plain records by mistake.
func AuditKeyFile(path string) Option {
	return func(db *DB) {
		if path == "" {
			return
		}
		k, err := LoadAuditKey(path)
		if err != nil {
			db.optErr = err
			return
		}
		db.auditKey = k
	}
}

// AuditKeyID is the id of the key this database appends with, "" if none.
func (db *DB) AuditKeyID() string {
	if db.auditKey == nil {
		return ""
	}
	return db.auditKey.id
}

// writeSum is the chain hash of records this process appends: the MAC
// under its key, or plain SHA-256 without one.
func (db *DB) writeSum() (string, func(prev string, seq int64, f []string) string) {
	if db.auditKey == nil {
		return "", hashRecord
	}
	return db.auditKey.id, db.auditKey.sum
}

// sum is hashRecord keyed: HMAC-SHA-256 over the same input.
func (k *AuditKey) sum(prev string, seq int64, f []string) string {
	return sumRecord(hmac.New(sha256.New, k.secret), prev, seq, f)
}

// ErrKeyedHead is returned by appends when the chain's head was keyed with
// another key than this process holds, or this process holds none.
var ErrKeyedHead = errors.New("storage: the audit trail is keyed with an audit key this process does not hold")

// checkHeadKey refuses to append after a head keyed with a key this
// process does not hold: a plain record there would be a downgrade, and
// one under another key would split the trail between secrets.
func (db *DB) checkHeadKey(headSeq int64, headKey string) error {
	if headKey == "" || headKey == db.AuditKeyID() {
		return nil
	}
	if db.auditKey == nil {
		return fmt.Errorf("%w: record %d is keyed with audit key %s and no audit key was given: pass --audit-key FILE or set MANDATE_AUDIT_KEY (every process writing this database needs the same key)", ErrKeyedHead, headSeq, headKey)
	}
	return fmt.Errorf("%w: record %d is keyed with audit key %s, but this process holds audit key %s; every process writing this database needs the same key", ErrKeyedHead, headSeq, headKey, db.auditKey.id)
}

// CheckWriteKey returns the error every append would return now if the
// chain's head is keyed with a key this process does not hold, so that a
// server or admin page misconfigured that way stops at start, with a clear
// message, instead of refusing every call. Open runs it when given a key.
func (db *DB) CheckWriteKey(ctx context.Context) error {
	var seq int64
	var headKey string
	err := db.db.QueryRowContext(ctx, `SELECT seq, key_id FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &headKey)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	} else if err != nil {
		return unavailable("read audit head", err)
	}
	return db.checkHeadKey(seq, headKey)
}

// KeyError says Verify could not check keyed records: no key was given,
// or the key given is not the one they were written with.
type KeyError struct {
	Seq   int64  // the first record that could not be checked
	KeyID string // the key it was written with
	Have  string // the id of the key given, "" if none
}

func (e *KeyError) Error() string {
	if e.Have == "" {
		return fmt.Sprintf("audit record %d and later are keyed with audit key %s: give that key (--audit-key FILE) to check them", e.Seq, e.KeyID)
	}
	return fmt.Sprintf("audit record %d is keyed with audit key %s, but the key given is %s: wrong audit key", e.Seq, e.KeyID, e.Have)
}

// verifySum is how Verify checks r: plain records with SHA-256, records
// keyed with the key given with its MAC. Anything else is a *KeyError.
func (db *DB) verifySum(r *Record) (func(prev string, seq int64, f []string) string, error) {
	switch {
	case r.KeyID == "":
		return hashRecord, nil
	case db.auditKey == nil:
		return nil, &KeyError{Seq: r.Seq, KeyID: r.KeyID}
	case r.KeyID != db.auditKey.id:
		return nil, &KeyError{Seq: r.Seq, KeyID: r.KeyID, Have: db.auditKey.id}
	}
	return db.auditKey.sum, nil
}

// newSHA256 is the plain chain hash's hash.
func newSHA256() hash.Hash { return sha256.New() }
