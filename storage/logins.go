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

// LoginAttempt is a password login about to be checked: the backoff keys
// it counts against, and how they back off (as in LoginFailure).
type LoginAttempt struct {
	Keys   []string
	Delay  func(key string, n int) time.Duration
	Forget time.Duration
}

// CountLoginAttempt refuses or counts a login before its password is
// hashed, in one write transaction. If any of the keys is blocked at now it
// returns until when, and counts nothing. Otherwise it counts the attempt
// against every key as if it had failed, blocking each for its Delay, and
// returns the zero time: a guess made while this one is still being checked
// sees the count this one will leave if it fails, so guesses at once, from
// any process on the database, are bounded as guesses one after another
// are. The caller settles the count once the password is checked:
// RecordLoginFailure with Counted when it was wrong, UncountLoginAttempt
// when it was right or never checked.
func (db *DB) CountLoginAttempt(ctx context.Context, now time.Time, a LoginAttempt) (time.Time, error) {
	var until time.Time
	err := db.write(func(tx *Tx) error {
		for _, k := range a.Keys {
			var b string
			err := tx.QueryRowContext(ctx, `SELECT blocked_until FROM login_throttle WHERE key = ?`, k).Scan(&b)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			} else if err != nil {
				return unavailable("read login backoff", err)
			}
			if t, _ := time.Parse(time.RFC3339Nano, b); t.After(now) && t.After(until) {
				until = t
			}
		}
		if !until.IsZero() {
			return nil
		}
		for _, k := range a.Keys {
			if _, err := countLoginFailure(ctx, tx, now, k, a.Delay, a.Forget); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return until, nil
}

// UncountLoginAttempt takes back what CountLoginAttempt counted for an
// attempt that did not fail: its password was right, or it was never
// checked. Each key's count drops by one and its block shrinks to what the
// remaining failures give, counted from the latest of them (never shorter
// than a sequence of single guesses would have left).
func (db *DB) UncountLoginAttempt(ctx context.Context, a LoginAttempt) error {
	return db.write(func(tx *Tx) error {
		for _, k := range a.Keys {
			var n int
			var blocked, updated string
			err := tx.QueryRowContext(ctx, `SELECT failures, blocked_until, updated_at FROM login_throttle WHERE key = ?`, k).Scan(&n, &blocked, &updated)
			if errors.Is(err, sql.ErrNoRows) {
				continue // cleared meanwhile by a success
			} else if err != nil {
				return unavailable("read login backoff", err)
			}
			if n--; n <= 0 {
				if _, err := tx.ExecContext(ctx, `DELETE FROM login_throttle WHERE key = ?`, k); err != nil {
					return unavailable("uncount login attempt", err)
				}
				continue
			}
			b, _ := time.Parse(time.RFC3339Nano, blocked)
			if t, perr := time.Parse(time.RFC3339Nano, updated); perr == nil && t.Add(a.Delay(k, n)).Before(b) {
				b = t.Add(a.Delay(k, n))
			}
			if _, err := tx.ExecContext(ctx, `UPDATE login_throttle SET failures = ?, blocked_until = ? WHERE key = ?`, n, timeText(b), k); err != nil {
				return unavailable("uncount login attempt", err)
			}
		}
		return nil
	})
}

// LoginFailure is one failed login to record.
type LoginFailure struct {
	User, Address string
	// Keys are the backoff keys the failure counts against.
	Keys []string
	// Counted is set when CountLoginAttempt already counted the failure:
	// each key's block is then only renewed from now, for the count it
	// holds.
	Counted bool
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
		until = time.Time{}
		for _, k := range f.Keys {
			count := countLoginFailure
			if f.Counted {
				count = renewLoginBlock
			}
			b, err := count(ctx, tx, now, k, f.Delay, f.Forget)
			if err != nil {
				return err
			}
			if b.After(until) {
				until = b
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

// countLoginFailure adds one failure to key (starting again at one Forget
// after its last) and blocks it for delay from now; it returns the block's end.
func countLoginFailure(ctx context.Context, tx *Tx, now time.Time, k string, delay func(string, int) time.Duration, forget time.Duration) (time.Time, error) {
	var n int
	var updated string
	err := tx.QueryRowContext(ctx, `SELECT failures, updated_at FROM login_throttle WHERE key = ?`, k).Scan(&n, &updated)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, unavailable("read login backoff", err)
	}
	if t, perr := time.Parse(time.RFC3339Nano, updated); err == nil && (perr != nil || now.Sub(t) > forget) {
		n = 0
	}
	n++
	b := now.Add(delay(k, n))
	if _, err := tx.ExecContext(ctx, `INSERT INTO login_throttle (key, failures, blocked_until, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, blocked_until = excluded.blocked_until, updated_at = excluded.updated_at`,
		k, n, timeText(b), timeText(now)); err != nil {
		return time.Time{}, unavailable("record login backoff", err)
	}
	return b, nil
}

// renewLoginBlock is countLoginFailure for a failure CountLoginAttempt
// already counted: the block runs for the key's count from now, the end of
// the check, rather than from its start. A key cleared meanwhile (by a
// success) counts the failure afresh.
func renewLoginBlock(ctx context.Context, tx *Tx, now time.Time, k string, delay func(string, int) time.Duration, forget time.Duration) (time.Time, error) {
	var n int
	var blocked string
	err := tx.QueryRowContext(ctx, `SELECT failures, blocked_until FROM login_throttle WHERE key = ?`, k).Scan(&n, &blocked)
	if errors.Is(err, sql.ErrNoRows) {
		return countLoginFailure(ctx, tx, now, k, delay, forget)
	} else if err != nil {
		return time.Time{}, unavailable("read login backoff", err)
	}
	b, _ := time.Parse(time.RFC3339Nano, blocked)
	if d := now.Add(delay(k, n)); d.After(b) {
		b = d
	}
	if _, err := tx.ExecContext(ctx, `UPDATE login_throttle SET blocked_until = ?, updated_at = ? WHERE key = ?`, timeText(b), timeText(now), k); err != nil {
		return time.Time{}, unavailable("record login backoff", err)
	}
	return b, nil
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
