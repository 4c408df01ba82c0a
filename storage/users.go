package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// User is a person who may log in to the admin web page. What they may
// approve is decided by the policy for their name, not stored here.
type User struct {
	Name         string
	PasswordHash string
	CreatedAt    time.Time
}

// Session is a logged-in admin user. CSRF is the token every form of the
// session must carry.
type Session struct {
	User      string
	CSRF      string
	ExpiresAt time.Time
}

// AddUser adds a user with a password hash (bcrypt or argon2, made by the
// caller); a name that exists is a conflict.
func (db *DB) AddUser(ctx context.Context, name, passwordHash string) error {
	if strings.TrimSpace(name) == "" || strings.ContainsAny(name, " #,") {
		return mandate.Errorf(mandate.EINVALID, "user name %q must be an identity name without spaces, commas or #", name)
	}
	if passwordHash == "" {
		return mandate.Errorf(mandate.EINVALID, "empty password hash")
	}
	res, err := db.db.ExecContext(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
		name, passwordHash, timeText(db.Now()))
	if err != nil {
		return unavailable("add user", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mandate.Errorf(mandate.ECONFLICT, "user %q exists", name)
	}
	return nil
}

// User returns the user called name, or a not_found error.
func (db *DB) User(ctx context.Context, name string) (User, error) {
	var u User
	var created string
	err := db.db.QueryRowContext(ctx, `SELECT name, password_hash, created_at FROM users WHERE name = ?`, name).
		Scan(&u.Name, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return u, mandate.Errorf(mandate.ENOTFOUND, "no user %q", name)
	} else if err != nil {
		return u, unavailable("read user", err)
	}
	u.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return u, nil
}

// CreateSession starts a session for user lasting ttl and returns its
// secret token (for the cookie; only its hash is stored) and CSRF token.
func (db *DB) CreateSession(ctx context.Context, user string, ttl time.Duration) (token string, s Session, err error) {
	now := db.Now()
	token, s = randomToken(), Session{User: user, CSRF: randomToken(), ExpiresAt: now.Add(ttl)}
	if _, err := db.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < ?`, timeText(now)); err != nil {
		return "", s, unavailable("prune sessions", err)
	}
	if _, err := db.db.ExecContext(ctx, `INSERT INTO sessions (token_hash, user, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		tokenHash(token), user, s.CSRF, timeText(now), timeText(s.ExpiresAt)); err != nil {
		return "", s, unavailable("create session", err)
	}
	return token, s, nil
}

// Session returns the live session for token, or a not_found error when
// there is none or it has expired.
func (db *DB) Session(ctx context.Context, token string) (Session, error) {
	var s Session
	var expires string
	err := db.db.QueryRowContext(ctx, `SELECT user, csrf, expires_at FROM sessions WHERE token_hash = ?`, tokenHash(token)).
		Scan(&s.User, &s.CSRF, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return s, mandate.Errorf(mandate.ENOTFOUND, "no session")
	} else if err != nil {
		return s, unavailable("read session", err)
	}
	s.ExpiresAt, _ = time.Parse(time.RFC3339Nano, expires)
	if !db.Now().Before(s.ExpiresAt) {
		return Session{}, mandate.Errorf(mandate.ENOTFOUND, "session expired")
	}
	return s, nil
}

// DeleteSession ends the session for token.
func (db *DB) DeleteSession(ctx context.Context, token string) error {
	if _, err := db.db.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, tokenHash(token)); err != nil {
		return unavailable("delete session", err)
	}
	return nil
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
