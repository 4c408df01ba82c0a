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

// RecoveryAgent is the audit agent of a decision recovery makes on an
// approved action it finds the live policy now refuses.
const RecoveryAgent = "mandate"

// OutcomeRefused is the outcome of an approval record for a person who
// tried to decide an action and was not let: not an approver of it, the
// identity that asked for it, or a process holding a policy that is not
// the live one. The action is left as it was.
const OutcomeRefused = "refused"

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
	// Note explains a decision other than the approver's (the rules now
	// refuse what they approved); it is the audit record's error, and the
	// action's comment that the agent sees.
	Note string
	// Held, when set, is the policy the deciding process holds: Decide
	// refuses, and records the refusal, unless it is the live policy (and,
	// when Held names rates, they are the live rates).
	Held *PolicyRef
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
	created_at, updated_at, expires_at, idempotency_key, customer_id, amount_minor, currency, approver, comment, decided_at, policy_tool, counted_at`

type scanner interface{ Scan(dest ...any) error }

func scanAction(s scanner) (*Action, Approval, error) {
	var a Action
	var ap Approval
	var args, result, created, updated, expires, decided, counted string
	if err := s.Scan(&a.ID, &a.Agent, &a.Tool, &args, &a.ArgsDigest, &a.Decision, &a.Rule, &a.PolicyVersion,
		&a.Status, &result, &a.Error, &created, &updated, &expires, &a.IdempotencyKey, &a.CustomerID, &a.AmountMinor, &a.Currency,
		&ap.Approver, &ap.Comment, &decided, &a.PolicyTool, &counted); err != nil {
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
	if counted != "" {
		a.CountedAt, _ = time.Parse(time.RFC3339Nano, counted)
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
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	_, ap, err := findAction(ctx, db.db, id)
	return ap, err
}

// Actions returns the actions matching f, newest first, at most f.Limit
// of them (DefaultActionLimit if 0) after skipping f.Offset.
func (db *DB) Actions(ctx context.Context, f ActionFilter) ([]*Action, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
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
// The decision is an audit record with the approver as agent and in its
// approver field, and the comment in its comment field. Refusals are
// recorded too, in the same transaction, with outcome "refused" and the
// action left pending: the identity that asked trying to decide its own
// action (a security event), and a process whose policy (r.Held) is not the
// live one, or whose exchange rates are not the live rates.
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
			refused = mandate.Errorf(mandate.EDENIED, "%s asked for action %s, so %s cannot decide it: another person must", a.Agent, id, r.Approver)
			return appendRefusal(ctx, tx, a, r, "", "self-approval refused: "+mandate.ErrorMessage(refused))
		}
		if r.Held != nil {
			if stale, err := checkHeld(ctx, tx, *r.Held); err != nil {
				if stale == "" {
					return err
				}
				refused = err
				return appendRefusal(ctx, tx, a, r, r.Held.Version, stale+err.Error())
			}
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
		comment := cleanText(rv.Comment)
		if rv.Note != "" {
			comment = cleanText(rv.Note)
		}
		status := StatusDenied
		if rv.Approve {
			status = StatusApproved
		}
		counted := ""
		if rv.Approve {
			// Now, when the approval lets it happen (countedAt): counted in
			// the minute the agent asked, a refund approved 23 hours later
			// would leave the 24 h window an hour after it was made.
			counted, a.CountedAt = timeText(now), now
		}
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, approver = ?, comment = ?, decided_at = ?, updated_at = ?, counted_at = ? WHERE id = ?`,
			status, rv.Approver, comment, timeText(now), timeText(now), counted, id); err != nil {
			return unavailable("update action", err)
		}
		if rv.Approve {
			if err := count(ctx, tx, a, countedAt(a), +1); err != nil {
				return unavailable("debit limits", err)
			}
		}
		rec := &Record{
			Time: now, Agent: rv.Approver, Tool: a.Tool, Args: a.Args, Attrs: rv.Attrs,
			Decision: rv.Decision, Rule: rv.Rule, PolicyVersion: rv.PolicyVersion,
			ActionID: id, Phase: PhaseApproval, Outcome: status, Error: rv.Note,
			Approver: rv.Approver, Comment: rv.Comment,
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

// appendRefusal records, inside tx, that r.Approver tried to decide a and
// was refused for why; a is left as it was.
func appendRefusal(ctx context.Context, tx *Tx, a *Action, r Review, version, why string) error {
	rec := &Record{
		Time: tx.db.Now(), Agent: r.Approver, Tool: a.Tool, Args: a.Args, Attrs: r.Attrs,
		Decision: "deny", PolicyVersion: version, ActionID: a.ID, Phase: PhaseApproval,
		Outcome: OutcomeRefused, Error: why, Approver: r.Approver, Comment: r.Comment,
	}
	if err := appendRecord(ctx, tx, rec); err != nil {
		return unavailable("append refusal", err)
	}
	return nil
}

// appendRefusalOnce records, inside tx, that recovery (RecoveryAgent) was
// refused a for why, unless a's newest record already says so: a recovery
// loop retrying every few seconds must not flood the trail.
func appendRefusalOnce(ctx context.Context, tx *Tx, a *Action, version, why string) error {
	var last string
	if err := tx.QueryRowContext(ctx, `SELECT error FROM audit WHERE seq = (SELECT MAX(seq) FROM audit_keys WHERE action_id = ?)`, a.ID).Scan(&last); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return unavailable("read audit", err)
	}
	if last == why {
		return nil
	}
	return appendRefusal(ctx, tx, a, Review{Approver: RecoveryAgent}, version, why)
}

// RefuseRecovery records that recovery left action a alone for why (its
// row cannot be trusted, say), once for the same reason however often it
// looks again.
func (db *DB) RefuseRecovery(ctx context.Context, a *Action, version, why string) error {
	return db.write(func(tx *Tx) error { return appendRefusalOnce(ctx, tx, a, version, why) })
}

// ClaimApproved moves an approved action to executing and returns it. It
// succeeds once per action, whoever asks and from whichever process: the
// caller that gets the action is the one that executes it.
func (db *DB) ClaimApproved(ctx context.Context, id string) (*Action, error) {
	return db.ClaimApprovedUnder(ctx, id, nil, nil)
}

// ClaimApprovedUnder is ClaimApproved for a process that decides under the
// policy held, and re-decides the action now, in the same transaction as
// the claim, so no reload or new rule can slip in between.
//
// If held is not the live policy, it refuses with a *StalePolicyError (if
// held names rates that are not the live rates, a *StaleRatesError) and
// leaves the action approved (recovery under the live policy will find
// it); the refusal is recorded, once per action for the same refusal, so a
// recovery loop retrying it does not flood the trail.
//
// check, if not nil, is given the action, who approved it and the usage
// counted now without this action's own share (debited at its approval),
// and returns the decision now. An error leaves the action approved and is
// returned. A review that does not approve denies the action: it is marked
// denied with an audit record (agent RecoveryAgent, error the review's
// Note), its limits are given back, and it is returned with status denied
// and no error.
func (db *DB) ClaimApprovedUnder(ctx context.Context, id string, held *PolicyRef, check func(*Action, Approval, Usage) (Review, error)) (*Action, error) {
	var a *Action
	var refused error
	err := db.write(func(tx *Tx) error {
		now, began := db.Now(), time.Now() // updated_at, and the same moment on this process's clock
		var err error
		var ap Approval
		if a, ap, err = findAction(ctx, tx, id); err != nil {
			return err
		}
		if a.Status != StatusApproved {
			return mandate.Errorf(mandate.ECONFLICT, "action %s is %s, not approved: it cannot be executed now", id, a.Status)
		}
		if held != nil {
			if stale, err := checkHeld(ctx, tx, *held); err != nil {
				if stale == "" {
					return err
				}
				refused = err
				return appendRefusalOnce(ctx, tx, a, held.Version, stale+err.Error())
			}
		}
		if check != nil {
			u, err := usage(ctx, tx, a, now)
			if err != nil {
				return unavailable("count usage", err)
			}
			rv, err := check(a, ap, withoutOwnShare(u, a, now))
			if err != nil {
				return err
			}
			if !rv.Approve {
				return denyApproved(ctx, tx, a, ap, rv, now)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, updated_at = ? WHERE id = ? AND status = ?`,
			StatusExecuting, timeText(now), id, StatusApproved); err != nil {
			return unavailable("claim action", err)
		}
		a.Status, a.UpdatedAt, a.Began = StatusExecuting, now, began
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

// denyApproved denies an approved action that the rules now refuse, inside
// tx: nothing was done, so the limits its approval debited are given back.
func denyApproved(ctx context.Context, tx *Tx, a *Action, ap Approval, rv Review, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `UPDATE actions SET status = ?, comment = ?, updated_at = ? WHERE id = ? AND status = ?`,
		StatusDenied, cleanText(rv.Note), timeText(now), a.ID, StatusApproved); err != nil {
		return unavailable("deny action", err)
	}
	if err := count(ctx, tx, a, countedAt(a), -1); err != nil {
		return unavailable("credit limits", err)
	}
	rec := &Record{
		Time: now, Agent: RecoveryAgent, Tool: a.Tool, Args: a.Args, Attrs: rv.Attrs,
		Decision: rv.Decision, Rule: rv.Rule, PolicyVersion: rv.PolicyVersion,
		ActionID: a.ID, Phase: PhaseApproval, Outcome: StatusDenied, Error: rv.Note,
		Approver: ap.Approver, Comment: ap.Comment,
	}
	if err := appendRecord(ctx, tx, rec); err != nil {
		return unavailable("append denial", err)
	}
	a.Status, a.UpdatedAt = StatusDenied, now
	return nil
}

// withoutOwnShare takes an approved action's own share out of usage counted
// now: its approval debited the limits (in the minute it was approved,
// countedAt), and re-deciding it must see usage as its approver did,
// without itself.
func withoutOwnShare(u Usage, a *Action, now time.Time) Usage {
	in := func(window time.Duration) bool { return minute(countedAt(a)) >= minute(now.Add(-window)) } // as usage counts
	switch a.Tool {
	case "refund_order":
		if in(24 * time.Hour) {
			u.AgentRefundedMinor24h -= a.AmountMinor
			u.AgentRefunds24h--
		}
		if a.CustomerID != "" && in(longestWindow) {
			u.CustomerRefunds30d--
		}
	case "cancel_order":
		if in(time.Hour) {
			u.AgentCancellations1h--
		}
	}
	return u
}

// countedAt is when an action's limits were debited, and so where they are
// given back: when a person approved it (Action.CountedAt, set by Decide),
// or, for an action the rules allowed outright or one approved before
// counted_at existed (debited then when it was recorded), CreatedAt.
func countedAt(a *Action) time.Time {
	if !a.CountedAt.IsZero() {
		return a.CountedAt
	}
	return a.CreatedAt
}

// ClaimNotification claims the right to tell people about pending action
// id, once for all processes sharing the database and across restarts: true
// if this call made the claim, false if someone had already. The claim is
// a lazy write: a power cut may lose it, and the cost is a second message.
func (db *DB) ClaimNotification(ctx context.Context, id string) (bool, error) {
	var claimed bool
	err := db.writeLazy(func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO notifications (action_id, notified_at) VALUES (?, ?) ON CONFLICT (action_id) DO NOTHING`,
			id, timeText(db.Now()))
		if err != nil {
			return unavailable("claim notification", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return unavailable("claim notification", err)
		}
		claimed = n == 1
		return nil
	})
	return claimed, err
}

// ReleaseNotification gives back the claim on telling people about action
// id, when its message could not be delivered: whoever sees the action
// next (a retry, here or on another replica) posts again.
func (db *DB) ReleaseNotification(ctx context.Context, id string) error {
	return db.writeLazy(func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM notifications WHERE action_id = ?`, id); err != nil {
			return unavailable("release notification", err)
		}
		return nil
	})
}
