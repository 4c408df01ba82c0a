package storage

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Login backoff: failed logins are counted per key (a user name, an
// address) in the database, so every process sharing it sees the same
// count and the same block (auth.Authenticator decides the keys and the
// delays).

// LoginBlockedUntil returns the latest time until which any of keys is
// blocked after failed logins, or the zero time when none is blocked at now.
func (db *DB) LoginBlockedUntil(ctx context.Context, now time.Time, keys ...string) (time.Time, error) {
	var until time.Time
	for _, k := range keys {
		var b string
		err := db.db.QueryRowContext(ctx, `SELECT blocked_until FROM login_throttle WHERE key = ?`, k).Scan(&b)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return time.Time{}, unavailable("read login backoff", err)
		}
		t, _ := time.Parse(time.RFC3339Nano, b)
		if t.After(now) && t.After(until) {
			until = t
		}
	}
	return until, nil
}

// LoginFailure is one failed login to record.
type LoginFailure struct {
	User, Address string
	// Keys are the backoff keys the failure counts against.
	Keys []string
	// Delay is the wait after the nth consecutive failure of key.
	Delay func(key string, n int) time.Duration
	// Forget is how long after its last failure a key starts again at zero.
	Forget time.Duration
	// Audit is the security event recorded with the failure.
	Audit *Record
}

// RecordLoginFailure counts a failed login against each key, blocks each
// for its Delay, keeps the failure for the queue's warning and appends the
// audit record, all in one transaction: the count that blocks the next
// guess is shared by every process on this database, and a failure is
// never counted without its audit record. It returns until when the login
// is now blocked.
func (db *DB) RecordLoginFailure(ctx context.Context, now time.Time, f LoginFailure) (time.Time, error) {
	var until time.Time
	err := db.write(func(tx *Tx) error {
		for _, k := range f.Keys {
			var n int
			var updated string
			err := tx.QueryRowContext(ctx, `SELECT failures, updated_at FROM login_throttle WHERE key = ?`, k).Scan(&n, &updated)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return unavailable("read login backoff", err)
			}
			if t, perr := time.Parse(time.RFC3339Nano, updated); err == nil && (perr != nil || now.Sub(t) > f.Forget) {
				n = 0
			}
			n++
			b := now.Add(f.Delay(k, n))
			if b.After(until) {
				until = b
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO login_throttle (key, failures, blocked_until, updated_at) VALUES (?, ?, ?, ?)
				ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, blocked_until = excluded.blocked_until, updated_at = excluded.updated_at`,
				k, n, timeText(b), timeText(now)); err != nil {
				return unavailable("record login backoff", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_failures (time, user, address) VALUES (?, ?, ?)`, timeText(now), f.User, f.Address); err != nil {
			return unavailable("record login failure", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_failures WHERE time < ?`, timeText(now.Add(-7*24*time.Hour))); err != nil {
			return unavailable("prune login failures", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_throttle WHERE updated_at < ? AND blocked_until < ?`,
			timeText(now.Add(-f.Forget)), timeText(now)); err != nil {
			return unavailable("prune login backoff", err)
		}
		if f.Audit != nil {
			if f.Audit.Time.IsZero() {
				f.Audit.Time = now
			}
			if err := appendRecord(ctx, tx, f.Audit); err != nil {
				return unavailable("append", err)
			}
		}
		return nil
	})
	return until, err
}

// ClearLoginFailures forgets the backoff of keys, after a login succeeded.
func (db *DB) ClearLoginFailures(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if _, err := db.db.ExecContext(ctx, `DELETE FROM login_throttle WHERE key = ?`, k); err != nil {
			return unavailable("clear login backoff", err)
		}
	}
	return nil
}

// LoginFailuresSince counts the failed logins per user name since t.
func (db *DB) LoginFailuresSince(ctx context.Context, t time.Time) (map[string]int, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT user, COUNT(*) FROM login_failures WHERE time >= ? GROUP BY user`, timeText(t))
	if err != nil {
		return nil, unavailable("count login failures", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var u string
		var n int
		if err := rows.Scan(&u, &n); err != nil {
			return nil, unavailable("count login failures", err)
		}
		out[u] = n
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("count login failures", err)
	}
	return out, nil
}
