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

// Tools of the audit records of approver management, written with the
// change itself: who became or stopped being a user, never a password.
// Their agent is KeyAdminAgent: no person signs in to add or remove a user
// (write access to the database is the authority).
const (
	UserAddTool    = "admin_user_add"
	UserRemoveTool = "admin_user_remove"
)

// AddUser adds a user with a password hash (bcrypt or argon2, made by the
// caller); a name that exists is a conflict. The user and its audit record
// (UserAddTool) are written in one transaction: no record, no user.
func (db *DB) AddUser(ctx context.Context, name, passwordHash string) error {
	if strings.TrimSpace(name) == "" || strings.ContainsAny(name, " #,") {
		return mandate.Errorf(mandate.EINVALID, "user name %q must be an identity name without spaces, commas or #", name)
	}
	if passwordHash == "" {
		return mandate.Errorf(mandate.EINVALID, "empty password hash")
	}
	return db.write(func(tx *Tx) error {
		now := db.Now()
		res, err := tx.ExecContext(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
			name, passwordHash, timeText(now))
		if err != nil {
			return unavailable("add user", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mandate.Errorf(mandate.ECONFLICT, "user %q exists", name)
		}
		if err := appendRecord(ctx, tx, adminRecord(UserAddTool, map[string]string{"user": name}, now)); err != nil {
			return unavailable("append user addition", err)
		}
		return nil
	})
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

// UserInfo describes a user for a listing: never the password hash, the
// token or a session's secrets.
type UserInfo struct {
	Name      string
	CreatedAt time.Time
	// Token says they hold a CLI token, made at TokenCreatedAt.
	Token          bool
	TokenCreatedAt time.Time
	// Sessions counts their unexpired admin page sessions.
	Sessions int
}

// Users lists every user by name, with whether each holds a CLI token and
// how many sessions each has open, in one query.
func (db *DB) Users(ctx context.Context) ([]UserInfo, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT name, created_at,
		COALESCE((SELECT created_at FROM approver_tokens WHERE user = users.name), ''),
		(SELECT COUNT(*) FROM sessions WHERE user = users.name AND expires_at > ?)
		FROM users ORDER BY name`, timeText(db.Now()))
	if err != nil {
		return nil, unavailable("read users", err)
	}
	defer rows.Close()
	var out []UserInfo
	for rows.Next() {
		var u UserInfo
		var created, token string
		if err := rows.Scan(&u.Name, &created, &token, &u.Sessions); err != nil {
			return nil, unavailable("read users", err)
		}
		u.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
		u.Token = token != ""
		u.TokenCreatedAt, _ = time.Parse(time.RFC3339Nano, token)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("read users", err)
	}
	return out, nil
}

// CreateSession starts a session for user lasting at most ttl and returns
// its secret token (for the cookie; only its hash is stored) and CSRF token.
// It ends the user's other sessions in the same transaction: a new login
// revokes the old ones, so a session stolen earlier dies the next time its
// owner signs in, and "sign in again" is always a way to end every session.
func (db *DB) CreateSession(ctx context.Context, user string, ttl time.Duration) (token string, s Session, err error) {
	now := db.Now()
	token, s = randomToken(), Session{User: user, CSRF: randomToken(), ExpiresAt: now.Add(ttl)}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return "", s, unavailable("create session", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < ? OR user = ?`, timeText(now), user); err != nil {
		return "", s, unavailable("prune sessions", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, user, csrf, created_at, expires_at, last_seen) VALUES (?, ?, ?, ?, ?, ?)`,
		tokenHash(token), user, s.CSRF, timeText(now), timeText(s.ExpiresAt), timeText(now)); err != nil {
		return "", s, unavailable("create session", err)
	}
	if err := tx.Commit(); err != nil {
		return "", s, unavailable("create session", err)
	}
	return token, s, nil
}

// Session returns the live session for token, or a not_found error when
// there is none or it has expired.
func (db *DB) Session(ctx context.Context, token string) (Session, error) {
	return db.ActiveSession(ctx, token, 0)
}

// ActiveSession returns the live session for token and marks it used now,
// or a not_found error when there is none, it is past its absolute expiry,
// or (idle > 0) it has not been used for idle. An expired session is
// deleted so it cannot come back if the clock moves.
func (db *DB) ActiveSession(ctx context.Context, token string, idle time.Duration) (Session, error) {
	var s Session
	var expires, lastSeen string
	th := tokenHash(token)
	err := db.db.QueryRowContext(ctx, `SELECT user, csrf, expires_at, last_seen FROM sessions WHERE token_hash = ?`, th).
		Scan(&s.User, &s.CSRF, &expires, &lastSeen)
	if errors.Is(err, sql.ErrNoRows) {
		return s, mandate.Errorf(mandate.ENOTFOUND, "no session")
	} else if err != nil {
		return s, unavailable("read session", err)
	}
	now := db.Now()
	s.ExpiresAt, _ = time.Parse(time.RFC3339Nano, expires)
	seen, perr := time.Parse(time.RFC3339Nano, lastSeen)
	if !now.Before(s.ExpiresAt) || (idle > 0 && (perr != nil || now.Sub(seen) >= idle)) {
		if _, err := db.db.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, th); err != nil {
			return Session{}, unavailable("delete session", err)
		}
		return Session{}, mandate.Errorf(mandate.ENOTFOUND, "session expired")
	}
	// Writing on every request would make each page view a commit; a
	// minute's resolution is plenty for an idle limit of minutes.
	if idle > 0 && now.Sub(seen) >= time.Minute {
		if _, err := db.db.ExecContext(ctx, `UPDATE sessions SET last_seen = ? WHERE token_hash = ?`, timeText(now), th); err != nil {
			return Session{}, unavailable("touch session", err)
		}
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

// SessionInfo describes one session of a user, without its secrets.
type SessionInfo struct {
	CreatedAt, LastSeen, ExpiresAt time.Time
}

// UserSessions returns the unexpired sessions of user, oldest first.
func (db *DB) UserSessions(ctx context.Context, user string) ([]SessionInfo, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT created_at, last_seen, expires_at FROM sessions WHERE user = ? AND expires_at > ? ORDER BY created_at`,
		user, timeText(db.Now()))
	if err != nil {
		return nil, unavailable("read sessions", err)
	}
	defer rows.Close()
	var out []SessionInfo
	for rows.Next() {
		var c, l, e string
		if err := rows.Scan(&c, &l, &e); err != nil {
			return nil, unavailable("read sessions", err)
		}
		var si SessionInfo
		si.CreatedAt, _ = time.Parse(time.RFC3339Nano, c)
		si.LastSeen, _ = time.Parse(time.RFC3339Nano, l)
		si.ExpiresAt, _ = time.Parse(time.RFC3339Nano, e)
		out = append(out, si)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("read sessions", err)
	}
	return out, nil
}

// RevokeSessions ends every session of user and returns how many there were.
func (db *DB) RevokeSessions(ctx context.Context, user string) (int64, error) {
	res, err := db.db.ExecContext(ctx, `DELETE FROM sessions WHERE user = ?`, user)
	if err != nil {
		return 0, unavailable("revoke sessions", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// RemoveUser deletes user with their sessions and token (the foreign keys
// cascade); a name that does not exist is not_found.
//
// The removal and its audit record (UserRemoveTool) are one transaction.
func (db *DB) RemoveUser(ctx context.Context, name string) error {
	return db.write(func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name)
		if err != nil {
			return unavailable("remove user", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mandate.Errorf(mandate.ENOTFOUND, "no user %q", name)
		}
		if err := appendRecord(ctx, tx, adminRecord(UserRemoveTool, map[string]string{"user": name}, db.Now())); err != nil {
			return unavailable("append user removal", err)
		}
		return nil
	})
}

// SetPassword replaces user's password hash and ends their sessions and
// their CLI approver token, in one transaction: whoever held the old
// password is signed out, including a token they minted with it.
func (db *DB) SetPassword(ctx context.Context, name, passwordHash string) error {
	if passwordHash == "" {
		return mandate.Errorf(mandate.EINVALID, "empty password hash")
	}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return unavailable("set password", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE name = ?`, passwordHash, name)
	if err != nil {
		return unavailable("set password", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mandate.Errorf(mandate.ENOTFOUND, "no user %q", name)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user = ?`, name); err != nil {
		return unavailable("set password", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM approver_tokens WHERE user = ?`, name); err != nil {
		return unavailable("set password", err)
	}
	if err := tx.Commit(); err != nil {
		return unavailable("set password", err)
	}
	return nil
}

// SetToken makes token the one CLI token of user, replacing any earlier
// one. Only its SHA-256 is stored.
func (db *DB) SetToken(ctx context.Context, user, token string) error {
	if len(token) < 32 {
		return mandate.Errorf(mandate.EINVALID, "token too short")
	}
	_, err := db.db.ExecContext(ctx, `INSERT INTO approver_tokens (token_hash, user, created_at) VALUES (?, ?, ?)
		ON CONFLICT (user) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at`,
		tokenHash(token), user, timeText(db.Now()))
	if err != nil {
		if isForeignKeyViolation(err) {
			return mandate.Errorf(mandate.ENOTFOUND, "no user %q; add them first with `mandate admin user add`", user)
		}
		return unavailable("set token", err)
	}
	return nil
}

// TokenUser returns the user whose token this is, or not_found.
func (db *DB) TokenUser(ctx context.Context, token string) (string, error) {
	var user string
	err := db.db.QueryRowContext(ctx, `SELECT user FROM approver_tokens WHERE token_hash = ?`, tokenHash(token)).Scan(&user)
	if errors.Is(err, sql.ErrNoRows) {
		return "", mandate.Errorf(mandate.ENOTFOUND, "no such token")
	} else if err != nil {
		return "", unavailable("read token", err)
	}
	return user, nil
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
