package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// Action statuses.
const (
	StatusPending   = "pending"   // waiting for a person to approve or deny
	StatusExecuting = "executing" // the backend was called; the outcome is not recorded yet
	StatusExecuted  = "executed"
	StatusFailed    = "failed"
	StatusDenied    = "denied"
	StatusApproved  = "approved"
	StatusExpired   = "expired"
)

// Action is the state of one action tool call.
type Action struct {
	ID            string          `json:"action_id"`
	Agent         string          `json:"agent"`
	Tool          string          `json:"tool"`
	Args          json.RawMessage `json:"args"`
	ArgsDigest    string          `json:"args_digest"`
	Decision      string          `json:"decision"`
	Rule          string          `json:"rule"`
	PolicyVersion string          `json:"policy_version"`
	Status        string          `json:"status"`
	Result        json.RawMessage `json:"result,omitempty"`
	Error         string          `json:"error,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	ExpiresAt     time.Time       `json:"expires_at"`
	// IdempotencyKey is the agent's key for this action, if it sent one.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// CustomerID, AmountMinor and Currency are the facts limits over time
	// count: whose account, and how much money in which currency.
	CustomerID  string `json:"customer_id,omitempty"`
	AmountMinor int64  `json:"amount_minor,omitempty"`
	Currency    string `json:"currency,omitempty"`
}

// ErrDuplicateKey is returned by RecordAttempt when the agent already used
// the action's idempotency key: read that action with ActionByKey instead.
var ErrDuplicateKey = errors.New("storage: idempotency key already used by this agent")

// Digest is the SHA-256 of canonical arguments: it binds an approval to
// exactly the arguments that were asked for.
func Digest(args []byte) string {
	sum := sha256.Sum256(args)
	return hex.EncodeToString(sum[:])
}

// RecordAttempt durably records a decided call before anything is done: the
// action row and the attempt audit record, in one transaction. If it fails,
// the caller must not act.
func (db *DB) RecordAttempt(ctx context.Context, a *Action, rec *Record) error {
	return db.DecideAndRecord(ctx, a, rec, nil)
}

// DecideAndRecord is RecordAttempt with the decision made inside the write
// transaction: decide is called with the usage counted for a's agent and
// customer and must fill in a's and rec's decision fields. Counting, deciding
// and recording (which debits the limits, as an executing action counts) are
// one transaction, serialized across processes.
func (db *DB) DecideAndRecord(ctx context.Context, a *Action, rec *Record, decide func(Usage)) error {
	return db.write(func(tx *Tx) error {
		now := db.Now()
		if decide != nil {
			u, err := usage(ctx, tx, a, now)
			if err != nil {
				return unavailable("count usage", err)
			}
			decide(u)
		}
		a.CreatedAt, a.UpdatedAt = now, now
		if a.ExpiresAt.IsZero() {
			a.ExpiresAt = now
		}
		a.ArgsDigest = Digest(a.Args)
		rec.Time, rec.ActionID, rec.Phase = now, a.ID, PhaseAttempt
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO actions (id, agent, tool, args, args_digest, decision, rule, policy_version,
				status, result, error, created_at, updated_at, expires_at, idempotency_key, customer_id, amount_minor, currency)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.Agent, a.Tool, string(a.Args), a.ArgsDigest, a.Decision, a.Rule, a.PolicyVersion,
			a.Status, a.Error, timeText(now), timeText(now), timeText(a.ExpiresAt), a.IdempotencyKey,
			a.CustomerID, a.AmountMinor, a.Currency); err != nil {
			if a.IdempotencyKey != "" && strings.Contains(err.Error(), "UNIQUE constraint failed: actions.agent, actions.idempotency_key") {
				return ErrDuplicateKey
			}
			return unavailable("insert action", err)
		}
		if a.Status == StatusExecuting {
			if err := count(ctx, tx, a, now, +1); err != nil {
				return unavailable("debit limits", err)
			}
		}
		if err := appendRecord(ctx, tx, rec); err != nil {
			return unavailable("append attempt", err)
		}
		return nil
	})
}

// RecordOutcome records what the backend did for an action that is
// executing: its final status and result on the action row and an outcome
// audit record, in one transaction. Exactly one outcome is ever recorded:
// if the action is no longer executing, it returns a conflict error.
// It returns once committed, without waiting for an fsync: recovery
// reconciles an outcome a power cut loses (writer.go).
func (db *DB) RecordOutcome(ctx context.Context, a *Action, rec *Record) error {
	faultPoint("before-outcome")
	return db.writeLazy(func(tx *Tx) error {
		now := db.Now()
		a.UpdatedAt = now
		rec.Time, rec.ActionID, rec.Phase = now, a.ID, PhaseOutcome
		res, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, result = ?, error = ?, updated_at = ? WHERE id = ? AND status = ?`,
			a.Status, string(a.Result), a.Error, timeText(now), a.ID, StatusExecuting)
		if err != nil {
			return unavailable("update action", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return unavailable("update action", err)
		} else if n == 0 {
			// Someone else (crash recovery) already recorded this action's outcome.
			return mandate.Errorf(mandate.ECONFLICT, "action %s is no longer executing; its outcome was already recorded", a.ID)
		}
		if a.Status == StatusFailed {
			// Nothing moved: give the limits back, in the minute they were taken.
			var prior Action
			var created string
			if err := tx.QueryRowContext(ctx, `SELECT agent, tool, customer_id, amount_minor, currency, created_at FROM actions WHERE id = ?`, a.ID).
				Scan(&prior.Agent, &prior.Tool, &prior.CustomerID, &prior.AmountMinor, &prior.Currency, &created); err != nil {
				return unavailable("read action", err)
			}
			at, _ := time.Parse(time.RFC3339Nano, created)
			if err := count(ctx, tx, &prior, at, -1); err != nil {
				return unavailable("credit limits", err)
			}
		}
		if err := appendRecord(ctx, tx, rec); err != nil {
			return unavailable("append outcome", err)
		}
		return nil
	})
}

// Action returns the action with id, or a not_found error.
func (db *DB) Action(ctx context.Context, id string) (*Action, error) {
	a, _, err := scanAction(db.db.QueryRowContext(ctx, `SELECT `+actionColumns+` FROM actions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no action %q", id)
	} else if err != nil {
		return nil, unavailable("read action", err)
	}
	return a, nil
}

// ActionByKey returns the action agent made with an idempotency key, or a
// not_found error.
func (db *DB) ActionByKey(ctx context.Context, agent, key string) (*Action, error) {
	// "idempotency_key != ''" lets SQLite use the partial unique index
	// (migration 0003): without it the planner cannot know the key is not
	// empty and scans every action ever recorded.
	a, _, err := scanAction(db.db.QueryRowContext(ctx, `SELECT `+actionColumns+` FROM actions WHERE agent = ? AND idempotency_key = ? AND idempotency_key != ''`, agent, key))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no action with that idempotency key")
	} else if err != nil {
		return nil, unavailable("read action", err)
	}
	return a, nil
}

// ActionsWithStatus returns the actions in status, oldest first, up to limit.
func (db *DB) ActionsWithStatus(ctx context.Context, status string, limit int) ([]*Action, error) {
	return queryActions(ctx, db.db, "list actions",
		`SELECT `+actionColumns+` FROM actions WHERE status = ? ORDER BY created_at LIMIT ?`, status, limit)
}

// Append adds one audit record that belongs to no action state, such as a
// read, in its own transaction.
func (db *DB) Append(ctx context.Context, rec *Record) error {
	return db.write(func(tx *Tx) error {
		if rec.Time.IsZero() {
			rec.Time = db.Now()
		}
		if err := appendRecord(ctx, tx, rec); err != nil {
			return unavailable("append", err)
		}
		return nil
	})
}
