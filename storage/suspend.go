package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mandatehq/mandate"
)

// The kill switch. A suspension is a row in the database every process
// shares, so one command stops an agent on every server at once: each
// action reads it inside the transaction that records its attempt (usage,
// limits.go), an approval inside the transaction that decides it, and
// lookups through a short-lived cache (tools/suspend.go).

// Suspension is one suspension of an agent by a person.
type Suspension struct {
	ID    int64  `json:"id"`
	Agent string `json:"agent"`
	// ActionsOnly leaves lookups answered; actions are refused either way.
	ActionsOnly bool      `json:"actions_only"`
	Reason      string    `json:"reason"`
	SuspendedBy string    `json:"suspended_by"`
	SuspendedAt time.Time `json:"suspended_at"`
	// ResumedBy and ResumedAt are empty while the suspension is active.
	ResumedBy string    `json:"resumed_by,omitempty"`
	ResumedAt time.Time `json:"resumed_at,omitzero"`
}

// Active reports whether the suspension is still in force.
func (s *Suspension) Active() bool { return s.ResumedAt.IsZero() }

// Scope says what the suspension refuses, for people.
func (s *Suspension) Scope() string {
	if s.ActionsOnly {
		return "actions"
	}
	return "actions and lookups"
}

// SuspendRequest is a person's suspending or resuming of an agent, decided
// by the policy Held (which must be the live one) with the audit record
// Audit to append in the same transaction.
type SuspendRequest struct {
	Agent, By, Reason string
	ActionsOnly       bool
	Held              PolicyRef
	Audit             *Record
}

const suspensionColumns = `id, agent, actions_only, reason, suspended_by, suspended_at, resumed_by, resumed_at`

func scanSuspension(s scanner) (*Suspension, error) {
	var x Suspension
	var only int
	var at, resumed string
	if err := s.Scan(&x.ID, &x.Agent, &only, &x.Reason, &x.SuspendedBy, &at, &x.ResumedBy, &resumed); err != nil {
		return nil, err
	}
	x.ActionsOnly = only != 0
	x.SuspendedAt, _ = time.Parse(time.RFC3339Nano, at)
	if resumed != "" {
		x.ResumedAt, _ = time.Parse(time.RFC3339Nano, resumed)
	}
	return &x, nil
}

func activeSuspension(ctx context.Context, q querier, agent string) (*Suspension, error) {
	s, err := scanSuspension(q.QueryRowContext(ctx, `SELECT `+suspensionColumns+` FROM suspensions WHERE agent = ? AND resumed_at = ''`, agent))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, unavailable("read suspension", err)
	}
	return s, nil
}

// Suspend suspends r.Agent as r.By: from its commit, every process sharing
// the database refuses the agent's actions (and its lookups unless
// r.ActionsOnly). It refuses with a *StalePolicyError unless r.Held is the
// live policy, checked in the same transaction. Suspending an agent that is
// already suspended with the same scope is a conflict; with another scope
// the active suspension is closed (resumed by r.By) and the new one starts,
// so widening or narrowing a suspension never leaves a gap.
func (db *DB) Suspend(ctx context.Context, r SuspendRequest) (*Suspension, error) {
	if r.Agent == "" || r.By == "" || r.Reason == "" {
		return nil, mandate.Errorf(mandate.EINVALID, "a suspension needs an agent, who suspends it and a reason")
	}
	r.Reason = cleanText(r.Reason)
	var out *Suspension
	err := db.write(func(tx *Tx) error {
		if err := checkLive(ctx, tx, r.Held); err != nil {
			return err
		}
		now := db.Now()
		cur, err := activeSuspension(ctx, tx, r.Agent)
		if err != nil {
			return err
		}
		if cur != nil {
			if cur.ActionsOnly == r.ActionsOnly {
				return mandate.Errorf(mandate.ECONFLICT, "%s is already suspended (suspension %d, %s, by %s at %s)",
					r.Agent, cur.ID, cur.Scope(), cur.SuspendedBy, cur.SuspendedAt.UTC().Format(time.RFC3339))
			}
			if _, err := tx.ExecContext(ctx, `UPDATE suspensions SET resumed_by = ?, resumed_at = ? WHERE id = ?`, r.By, timeText(now), cur.ID); err != nil {
				return unavailable("replace suspension", err)
			}
		}
		only := 0
		if r.ActionsOnly {
			only = 1
		}
		// RETURNING rather than LastInsertId, which PostgreSQL's driver lacks.
		var id int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO suspensions (agent, actions_only, reason, suspended_by, suspended_at) VALUES (?, ?, ?, ?, ?) RETURNING id`,
			r.Agent, only, r.Reason, r.By, timeText(now)).Scan(&id); err != nil {
			return unavailable("insert suspension", err)
		}
		out = &Suspension{ID: id, Agent: r.Agent, ActionsOnly: r.ActionsOnly, Reason: r.Reason, SuspendedBy: r.By, SuspendedAt: now}
		if r.Audit != nil {
			r.Audit.Time = now
			if err := appendRecord(ctx, tx, r.Audit); err != nil {
				return unavailable("append suspension", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Resume lifts r.Agent's active suspension as r.By, under the live policy
// r.Held, appending r.Audit in the same transaction. An agent that is not
// suspended is a not_found error.
func (db *DB) Resume(ctx context.Context, r SuspendRequest) (*Suspension, error) {
	var out *Suspension
	err := db.write(func(tx *Tx) error {
		if err := checkLive(ctx, tx, r.Held); err != nil {
			return err
		}
		now := db.Now()
		cur, err := activeSuspension(ctx, tx, r.Agent)
		if err != nil {
			return err
		}
		if cur == nil {
			return mandate.Errorf(mandate.ENOTFOUND, "%s is not suspended", r.Agent)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE suspensions SET resumed_by = ?, resumed_at = ? WHERE id = ?`, r.By, timeText(now), cur.ID); err != nil {
			return unavailable("resume", err)
		}
		cur.ResumedBy, cur.ResumedAt = r.By, now
		out = cur
		if r.Audit != nil {
			r.Audit.Time = now
			if err := appendRecord(ctx, tx, r.Audit); err != nil {
				return unavailable("append resumption", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ActiveSuspension returns agent's suspension in force, or nil.
func (db *DB) ActiveSuspension(ctx context.Context, agent string) (*Suspension, error) {
	return activeSuspension(ctx, db.db, agent)
}

// ActiveSuspensions returns every suspension in force, oldest first: the
// whole table the lookup cache holds (a handful of rows).
func (db *DB) ActiveSuspensions(ctx context.Context) ([]*Suspension, error) {
	return db.suspensions(ctx, `SELECT `+suspensionColumns+` FROM suspensions WHERE resumed_at = '' ORDER BY id`)
}

// Suspensions returns the history of suspensions, newest first, of agent
// (every agent if ""), at most limit (0: 100).
func (db *DB) Suspensions(ctx context.Context, agent string, limit int) ([]*Suspension, error) {
	if limit <= 0 {
		limit = 100
	}
	if agent == "" {
		return db.suspensions(ctx, `SELECT `+suspensionColumns+` FROM suspensions ORDER BY id DESC LIMIT ?`, limit)
	}
	return db.suspensions(ctx, `SELECT `+suspensionColumns+` FROM suspensions WHERE agent = ? ORDER BY id DESC LIMIT ?`, agent, limit)
}

func (db *DB) suspensions(ctx context.Context, q string, args ...any) ([]*Suspension, error) {
	rows, err := db.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, unavailable("list suspensions", err)
	}
	defer rows.Close()
	var out []*Suspension
	for rows.Next() {
		s, err := scanSuspension(rows)
		if err != nil {
			return nil, unavailable("scan suspension", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("list suspensions", err)
	}
	return out, nil
}

// SuspendedError refuses to carry out an action of a suspended agent; it
// names the suspension, never its reason (which may say things about
// customers or the investigation that the agent must not see).
type SuspendedError struct {
	Agent string
	ID    int64
}

func (e *SuspendedError) Error() string {
	return fmt.Sprintf("%s is suspended (suspension %d): its actions are held until a person resumes it with `mandate agent resume %s`", e.Agent, e.ID, e.Agent)
}

// Unwrap makes the error a conflict with a message safe to show.
func (e *SuspendedError) Unwrap() error {
	return mandate.Errorf(mandate.ECONFLICT, "%s", e.Error())
}

// RevertClaim is a person's claim to revert an action (ClaimRevert).
type RevertClaim struct {
	By string // who holds it
	At string // when it was made, as stored: it names this claim's revert
}

// ClaimRevert claims the right to revert action id for by, once for all
// processes and people, and returns the claim now held: by's (made now, or
// earlier by the same person, whose runs are made idempotent by the
// revert's idempotency key) or that of the person who claimed it first.
func (db *DB) ClaimRevert(ctx context.Context, id, by string) (RevertClaim, error) {
	var c RevertClaim
	err := db.write(func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO reverts (action_id, revert_by, claimed_at) VALUES (?, ?, ?) ON CONFLICT (action_id) DO NOTHING`,
			id, by, timeText(db.Now())); err != nil {
			return unavailable("claim revert", err)
		}
		return tx.QueryRowContext(ctx, `SELECT revert_by, claimed_at FROM reverts WHERE action_id = ?`, id).Scan(&c.By, &c.At)
	})
	if err != nil {
		return RevertClaim{}, err
	}
	return c, nil
}

// ReleaseRevert gives back claim c on reverting action id, once its revert
// ended without changing anything (refused by the rules, denied, failed):
// the next run, by anyone, claims it anew. A claim someone else holds by
// now is left as it is.
func (db *DB) ReleaseRevert(ctx context.Context, id string, c RevertClaim) error {
	return db.write(func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM reverts WHERE action_id = ? AND revert_by = ? AND claimed_at = ?`, id, c.By, c.At); err != nil {
			return unavailable("release revert", err)
		}
		return nil
	})
}
