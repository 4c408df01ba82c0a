package storage

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// APIKeyPrefix starts every agent API key, so a leaked key is easy to
// recognise (secret scanners, logs) and a key is not mistaken for another
// kind of token.
const APIKeyPrefix = "mk_"

// APIKey is an agent's credential for the HTTP transport, without its
// secret, which is never stored.
type APIKey struct {
	ID        string
	Identity  string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	RevokedAt time.Time // zero: not revoked
	LastUsed  time.Time // zero: never used; updated at most once a minute
	// Unreadable lists, as column=value, a revoked_at or expires_at set
	// (by hand) to text that is no time we can read. Such a key counts as
	// revoked or expired: fail closed, never "never".
	Unreadable []string
}

// Active reports whether the key may be used at now.
func (k APIKey) Active(now time.Time) bool {
	return k.RevokedAt.IsZero() && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt))
}

// Tools of the audit records of key management, written with the change
// itself: the key's id, agent and expiry, never its secret.
const (
	KeyCreateTool = "agent_key_create"
	KeyRevokeTool = "agent_key_revoke"
)

// KeyAdminAgent is the audit agent of key management records. No person
// signs in to create or revoke a key (write access to the database is the
// authority), and the key's agent did not do it: the record names Mandate,
// as an expiry's does, and the key's agent is in its arguments.
const KeyAdminAgent = "mandate"

// keyRecord is the audit record of tool (KeyCreateTool or KeyRevokeTool)
// done to k at now.
func keyRecord(tool string, k APIKey, now time.Time) *Record {
	exp := ""
	if !k.ExpiresAt.IsZero() {
		exp = k.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return adminRecord(tool, map[string]string{"agent": k.Identity, "key_id": k.ID, "expires_at": exp}, now)
}

// adminRecord is the audit record of a management change (a key, a user)
// made at now: by KeyAdminAgent, done, its subject in args.
func adminRecord(tool string, args map[string]string, now time.Time) *Record {
	b, _ := json.Marshal(args)
	return &Record{Time: now, Agent: KeyAdminAgent, Tool: tool, Args: b, Phase: PhaseAttempt, Outcome: StatusExecuted}
}

// CreateAPIKey makes a key for identity, expiring at expires (zero: never),
// and returns it whole: this is the only time the secret exists outside
// the caller. The key and its audit record (KeyCreateTool) are written in
// one transaction: no record, no key. Whether identity may hold a key is
// the caller's to check against the policy.
func (db *DB) CreateAPIKey(ctx context.Context, identity string, expires time.Time) (string, APIKey, error) {
	if p := mandate.NameProblem(identity); p != "" {
		return "", APIKey{}, mandate.Errorf(mandate.EINVALID, "identity %q: %s", mandate.Visible(identity, false), p)
	}
	var idb [6]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", APIKey{}, err
	}
	k := APIKey{ID: hex.EncodeToString(idb[:]), Identity: identity, CreatedAt: db.Now().UTC(), ExpiresAt: expires}
	secret := randomToken() // 256 bits, hex: no '_' in it, so the key splits unambiguously
	exp := ""
	if !expires.IsZero() {
		exp = timeText(expires)
	}
	err := db.write(func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys (id, secret_hash, identity, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			k.ID, tokenHash(secret), identity, timeText(k.CreatedAt), exp); err != nil {
			return unavailable("create api key", err)
		}
		if err := appendRecord(ctx, tx, keyRecord(KeyCreateTool, k, k.CreatedAt)); err != nil {
			return unavailable("append key creation", err)
		}
		return nil
	})
	if err != nil {
		return "", APIKey{}, err
	}
	return APIKeyPrefix + k.ID + "_" + secret, k, nil
}

// SplitAPIKey returns the id and secret of a key in the mk_<id>_<secret>
// form, or ok false when key does not have that shape.
func SplitAPIKey(key string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(key, APIKeyPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 12 || len(secret) != 64 || !isHex(id) || !isHex(secret) {
		return "", "", false
	}
	return id, secret, true
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// VerifyAPIKey returns the key record whose id and secret key holds,
// read from the database on every call so that a revocation by any
// process is seen at once. A key of the wrong shape, an unknown id or a
// wrong secret is not_found (the same for all three, so the answer says
// nothing about which ids exist); a revoked or expired key is returned
// with its record so the caller can say which, and decide.
func (db *DB) VerifyAPIKey(ctx context.Context, key string) (APIKey, error) {
	id, secret, ok := SplitAPIKey(key)
	if !ok {
		return APIKey{}, mandate.Errorf(mandate.ENOTFOUND, "no such key")
	}
	var hash string
	row := db.db.QueryRowContext(ctx, `SELECT secret_hash, identity, created_at, expires_at, revoked_at, last_used_at FROM api_keys WHERE id = ?`, id)
	k, err := scanAPIKey(id, row.Scan, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return APIKey{}, mandate.Errorf(mandate.ENOTFOUND, "no such key")
	} else if err != nil {
		return APIKey{}, unavailable("read api key", err)
	}
	if subtle.ConstantTimeCompare([]byte(hash), []byte(tokenHash(secret))) != 1 {
		return APIKey{ID: id}, mandate.Errorf(mandate.ENOTFOUND, "no such key")
	}
	return k, nil
}

func scanAPIKey(id string, scan func(...any) error, hash *string) (APIKey, error) {
	k := APIKey{ID: id}
	var created, expires, revoked, used string
	if err := scan(hash, &k.Identity, &created, &expires, &revoked, &used); err != nil {
		return k, err
	}
	k.CreatedAt, _ = parseKeyTime(created)
	k.LastUsed, _ = parseKeyTime(used)
	var ok bool
	if k.ExpiresAt, ok = parseKeyTime(expires); !ok {
		k.ExpiresAt = time.Unix(0, 0).UTC() // long expired
		k.Unreadable = append(k.Unreadable, "expires_at="+strconv.Quote(mandate.Truncate(expires, 64)))
	}
	if k.RevokedAt, ok = parseKeyTime(revoked); !ok {
		k.RevokedAt = time.Unix(0, 0).UTC()
		k.Unreadable = append(k.Unreadable, "revoked_at="+strconv.Quote(mandate.Truncate(revoked, 64)))
	}
	return k, nil
}

// keyTimeLayouts are the forms a time in api_keys is read in: ours
// (timeText), then those an operator's hand-made UPDATE writes, such as
// SQLite's CURRENT_TIMESTAMP ("2006-01-02 15:04:05", UTC) and
// PostgreSQL's now()::text ("2006-01-02 15:04:05.999999+00"). Fractional
// seconds are accepted after the seconds in each.
var keyTimeLayouts = []string{timeFormat, time.RFC3339, "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04:05Z07",
	"2006-01-02 15:04:05", "2006-01-02T15:04:05"}

// parseKeyTime reads a time column of api_keys: "" is none (zero, ok);
// ok is false for text in none of keyTimeLayouts.
func parseKeyTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, true
	}
	for _, layout := range keyTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// APIKeys lists every key, newest first, without secrets.
func (db *DB) APIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT id, secret_hash, identity, created_at, expires_at, revoked_at, last_used_at FROM api_keys ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, unavailable("list api keys", err)
	}
	defer rows.Close()
	var out []APIKey
	for rows.Next() {
		var id, hash string
		k, err := scanAPIKey("", func(dest ...any) error { return rows.Scan(append([]any{&id}, dest...)...) }, &hash)
		if err != nil {
			return nil, unavailable("list api keys", err)
		}
		k.ID = id
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("list api keys", err)
	}
	return out, nil
}

// RevokeAPIKey revokes the key with id; every server sharing the database
// refuses it from its next request. The revocation and its audit record
// (KeyRevokeTool) are written in one transaction. Revoking a revoked key
// is a no-op, unrecorded; an unknown id is not_found, whose message
// repeats id only if it has an id's shape (anything else may be a secret).
func (db *DB) RevokeAPIKey(ctx context.Context, id string) (APIKey, error) {
	var k APIKey
	err := db.write(func(tx *Tx) error {
		now := db.Now()
		res, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at = ''`, timeText(now), id)
		if err != nil {
			return unavailable("revoke api key", err)
		}
		var hash string
		row := tx.QueryRowContext(ctx, `SELECT secret_hash, identity, created_at, expires_at, revoked_at, last_used_at FROM api_keys WHERE id = ?`, id)
		k, err = scanAPIKey(id, row.Scan, &hash)
		if errors.Is(err, sql.ErrNoRows) {
			if len(id) != 12 || !isHex(id) {
				// Not echoed: it may be (part of) a secret pasted by mistake.
				return mandate.Errorf(mandate.ENOTFOUND, "no such API key: an id is 12 hex digits, the part after mk_; `mandate agent key list` shows them")
			}
			return mandate.Errorf(mandate.ENOTFOUND, "no API key %s; `mandate agent key list` shows them", id)
		} else if err != nil {
			return unavailable("revoke api key", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // revoked already
		}
		if err := appendRecord(ctx, tx, keyRecord(KeyRevokeTool, k, now)); err != nil {
			return unavailable("append key revocation", err)
		}
		return nil
	})
	if err != nil {
		return APIKey{}, err
	}
	return k, nil
}

// TouchAPIKey records that the key with id was used at t.
func (db *DB) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	if _, err := db.db.ExecContext(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id = ? AND last_used_at < ?`, timeText(t), id, timeText(t)); err != nil {
		return unavailable("record api key use", err)
	}
	return nil
}
