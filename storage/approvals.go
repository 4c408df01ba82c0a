package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mandatehq/mandate"
)

// ExpiryAgent is the audit agent of the record that expires a pending
// action: nobody decided, the clock did.
const ExpiryAgent = "mandate"

// Review is a person's decision on a pending action, with the rule that let
// them make it.
type Review struct {
	Approver string
	Approve  bool
	// Comment is the approver's note; the agent sees it on a denial.
	Comment string
	// Decision, Rule and PolicyVersion record why the decision stands: the
	// approval rule that let the approver approve, or the rule of the
	// current policy that refused the action.
	Decision, Rule, PolicyVersion string
	// Attrs are the facts freshly read for the decision.
	Attrs json.RawMessage
}

// Approval is who decided a pending action, when, and their comment.
type Approval struct {
	Approver  string    `json:"approver"`
	Comment   string    `json:"comment"`
	DecidedAt time.Time `json:"decided_at"`
}

// ActionFilter selects actions; zero fields select everything.
type ActionFilter struct {
	Status, Agent, Tool string
	// Limit caps the number returned, newest first: 0 means
	// DefaultActionLimit, and CountActions says how many matched in all.
	Limit int
	// Offset skips that many of the newest first, for the next page.
	Offset int
}

// DefaultActionLimit is how many actions Actions returns when the filter
// does not say: callers that show a list must say how many more there are.
const DefaultActionLimit = 500

const actionColumns = `id, agent, tool, args, args_digest, decision, rule, policy_version, status, result, error,
	created_at, updated_at, expires_at, idempotency_key, customer_id, amount_minor, currency, approver, comment, decided_at`

type scanner interface{ Scan(dest ...any) error }

func scanAction(s scanner) (*Action, Approval, error) {
	var a Action
	var ap Approval
	var args, result, created, updated, expires, decided string
	if err := s.Scan(&a.ID, &a.Agent, &a.Tool, &args, &a.ArgsDigest, &a.Decision, &a.Rule, &a.PolicyVersion,
		&a.Status, &result, &a.Error, &created, &updated, &expires, &a.IdempotencyKey, &a.CustomerID, &a.AmountMinor, &a.Currency,
		&ap.Approver, &ap.Comment, &decided); err != nil {
		return nil, ap, err
	}
	a.Args = json.RawMessage(args)
	if result != "" {
		a.Result = json.RawMessage(result)
	}
	a.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	a.UpdatedAt, _ = time.Parse(time.RFC3339Nano, updated)
	a.ExpiresAt, _ = time.Parse(time.RFC3339Nano, expires)
	if decided != "" {
		ap.DecidedAt, _ = time.Parse(time.RFC3339Nano, decided)
	}
	return &a, ap, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func findAction(ctx context.Context, q querier, id string) (*Action, Approval, error) {
	a, ap, err := scanAction(q.QueryRowContext(ctx, `SELECT `+actionColumns+` FROM actions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ap, mandate.Errorf(mandate.ENOTFOUND, "no action %q", id)
	} else if err != nil {
		return nil, ap, unavailable("read action", err)
	}
	return a, ap, nil
}

// Approval returns who decided the action with id and what they said; the
// zero Approval when nobody has.
func (db *DB) Approval(ctx context.Context, id string) (Approval, error) {
	_, ap, err := findAction(ctx, db.db, id)
	return ap, err
}

// Actions returns the actions matching f, newest first, at most f.Limit
// of them (DefaultActionLimit if 0) after skipping f.Offset.
func (db *DB) Actions(ctx context.Context, f ActionFilter) ([]*Action, error) {
	where, args := actionWhere(f)
	if f.Limit <= 0 {
		f.Limit = DefaultActionLimit
	}
	q := `SELECT ` + actionColumns + ` FROM actions WHERE ` + where + " ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
	args = append(args, f.Limit, max(f.Offset, 0))
	return queryActions(ctx, db.db, "list actions", q, args...)
}

// queryActions runs a query selecting actionColumns and scans every row.
func queryActions(ctx context.Context, q rowsQuerier, op, query string, args ...any) ([]*Action, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, unavailable(op, err)
	}
	defer rows.Close()
	var out []*Action
	for rows.Next() {
		a, _, err := scanAction(rows)
		if err != nil {
			return nil, unavailable("scan action", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(op, err)
	}
	return out, nil
}

// Decide records a person's decision on a pending action: approved, or
// denied with a comment. It is one write transaction, so that of two
// people deciding at once, or a decision racing expiry, exactly one wins
// even across processes: the action must still be pending and not expired
// (an expired one is marked expired and refused), and the approver must not
// be the identity that asked for it.
//
// check, if not nil, runs inside the transaction once those hold, with the
// action and its agent's usage counted now, so limits over time are judged
// against what is true at the moment of the decision. It returns the review
// to record (it may turn an approval into a denial), or an error that
// leaves the action pending and is returned as is.
//
// An approval debits the limits over time at once, as an executing action
// does, so no other call can squeeze under a limit between the approval and
// the execution; a failed execution gives them back (RecordOutcome).
//
// The decision is an audit record with the approver as agent and the
// comment in its error field.
func (db *DB) Decide(ctx context.Context, id string, r Review, check func(*Action, Usage) (Review, error)) (*Action, error) {
	if r.Approver == "" {
		return nil, mandate.Errorf(mandate.EDENIED, "no approver identity")
	}
	var a *Action
	var refused error // a refusal that still commits (an expiry)
	err := db.write(func(tx *Tx) error {
		now := db.Now()
		var err error
		if a, _, err = findAction(ctx, tx, id); err != nil {
			return err
		}
		if a.Status != StatusPending {
			return mandate.Errorf(mandate.ECONFLICT, "action %s is %s, not pending: it was already decided", id, a.Status)
		}
		if !now.Before(a.ExpiresAt) {
			refused = mandate.Errorf(mandate.ECONFLICT, "action %s expired at %s without a decision", id, a.ExpiresAt.UTC().Format(time.RFC3339))
			return expire(ctx, tx, a, now)
		}
		if r.Approver == a.Agent {
			return mandate.Errorf(mandate.EDENIED, "%s asked for action %s, so %s cannot decide it: another person must", a.Agent, id, r.Approver)
		}
		rv := r
		if check != nil {
			u, err := usage(ctx, tx, a, now)
			if err != nil {
				return unavailable("count usage", err)
			}
			if rv, err = check(a, u); err != nil {
				return err
			}
			rv.Approver = r.Approver
		}
		status := StatusDenied
		if rv.Approve {
			status = StatusApproved
		}
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, approver = ?, comment = ?, decided_at = ?, updated_at = ? WHERE id = ?`,
			status, rv.Approver, rv.Comment, timeText(now), timeText(now), id); err != nil {
			return unavailable("update action", err)
		}
		if rv.Approve {
			// In the minute the action was recorded: RecordOutcome gives a
			// failed action's limits back in that minute.
			if err := count(ctx, tx, a, a.CreatedAt, +1); err != nil {
				return unavailable("debit limits", err)
			}
		}
		rec := &Record{
			Time: now, Agent: rv.Approver, Tool: a.Tool, Args: a.Args, Attrs: rv.Attrs,
			Decision: rv.Decision, Rule: rv.Rule, PolicyVersion: rv.PolicyVersion,
			ActionID: id, Phase: PhaseApproval, Outcome: status, Error: rv.Comment,
		}
		if err := appendRecord(ctx, tx, rec); err != nil {
			return unavailable("append approval", err)
		}
		a.Status, a.UpdatedAt = status, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, refused
	}
	return a, nil
}

// expire marks a pending action expired and records it, inside tx.
func expire(ctx context.Context, tx *Tx, a *Action, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, updated_at = ? WHERE id = ? AND status = ?`,
		StatusExpired, timeText(now), a.ID, StatusPending); err != nil {
		return unavailable("expire action", err)
	}
	rec := &Record{
		Time: now, Agent: ExpiryAgent, Tool: a.Tool, Args: a.Args, Decision: a.Decision, Rule: a.Rule,
		PolicyVersion: a.PolicyVersion, ActionID: a.ID, Phase: PhaseApproval, Outcome: StatusExpired,
		Error: fmt.Sprintf("nobody decided before %s", a.ExpiresAt.UTC().Format(time.RFC3339)),
	}
	if err := appendRecord(ctx, tx, rec); err != nil {
		return unavailable("append expiry", err)
	}
	a.Status, a.UpdatedAt = StatusExpired, now
	return nil
}

// ExpirePending marks every pending action whose time is up at now as
// expired, each with an audit record, and returns how many it expired.
func (db *DB) ExpirePending(ctx context.Context, now time.Time) (int, error) {
	// A read first, so that the common case (nothing due) takes no write
	// lock; the write transaction checks again.
	due, err := db.duePending(ctx, db.db, now)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	n := 0
	err = db.write(func(tx *Tx) error {
		due, err := db.duePending(ctx, tx, now)
		if err != nil {
			return err
		}
		for _, a := range due {
			if err := expire(ctx, tx, a, now); err != nil {
				return err
			}
		}
		n = len(due)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

type rowsQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// duePending lists the pending actions whose time is up at now.
func (db *DB) duePending(ctx context.Context, q rowsQuerier, now time.Time) ([]*Action, error) {
	pending, err := queryActions(ctx, q, "list pending",
		`SELECT `+actionColumns+` FROM actions WHERE status = ? ORDER BY created_at, id`, StatusPending)
	if err != nil {
		return nil, err
	}
	var due []*Action
	for _, a := range pending {
		if !now.Before(a.ExpiresAt) {
			due = append(due, a)
		}
	}
	return due, nil
}

// ClaimApproved moves an approved action to executing and returns it. It
// succeeds once per action, whoever asks and from whichever process: the
// caller that gets the action is the one that executes it.
func (db *DB) ClaimApproved(ctx context.Context, id string) (*Action, error) {
	var a *Action
	err := db.write(func(tx *Tx) error {
		now := db.Now()
		var err error
		if a, _, err = findAction(ctx, tx, id); err != nil {
			return err
		}
		if a.Status != StatusApproved {
			return mandate.Errorf(mandate.ECONFLICT, "action %s is %s, not approved: it cannot be executed now", id, a.Status)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, updated_at = ? WHERE id = ? AND status = ?`,
			StatusExecuting, timeText(now), id, StatusApproved); err != nil {
			return unavailable("claim action", err)
		}
		a.Status, a.UpdatedAt = StatusExecuting, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}
