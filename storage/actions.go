package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	// count: whose account, and how much money, converted into the base
	// currency the limits are written in (Currency is that base currency).
	CustomerID  string `json:"customer_id,omitempty"`
	AmountMinor int64  `json:"amount_minor,omitempty"`
	Currency    string `json:"currency,omitempty"`
	// PolicyTool is the policy tool that decided the action when it is not
	// Tool (a person's revert, decided as revert_update_account), "" for
	// every other action: approving or recovering it asks the same one.
	PolicyTool string `json:"policy_tool,omitempty"`
	// CountedAt is when the action's limits were debited if not CreatedAt:
	// when a person approved it (countedAt).
	CountedAt time.Time `json:"counted_at,omitzero"`
	// Began is when this process recorded the action as executing (its
	// UpdatedAt), read from this process's monotonic clock inside that
	// transaction; zero for an action read back from the database. The
	// backend calls made for it end within a budget counted from here, not
	// from whenever they start, so recovery's grace, counted from
	// UpdatedAt, covers them however long the commit took (tools.execute).
	Began time.Time `json:"-"`
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
		// The commit point of cancellation (see ErrCancelled). Past it the
		// caller's ctx must not reach SQLite: an interrupted statement rolls
		// back the whole batch transaction, other callers' writes included.
		if ctx.Err() != nil {
			return ErrCancelled
		}
		ctx := context.WithoutCancel(ctx)
		now, began := db.Now(), time.Now() // updated_at, and the same moment on this process's clock
		if decide != nil {
			u, err := usage(ctx, tx, a, now)
			if err != nil {
				return unavailable("count usage", err)
			}
			decide(u)
		}
		a.CreatedAt, a.UpdatedAt, a.Began = now, now, began
		if a.ExpiresAt.IsZero() {
			a.ExpiresAt = now
		}
		a.ArgsDigest = Digest(a.Args)
		a.Error, a.Rule = cleanText(a.Error), cleanText(a.Rule)
		rec.Time, rec.ActionID, rec.Phase = now, a.ID, PhaseAttempt
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO actions (id, agent, tool, args, args_digest, decision, rule, policy_version,
				status, result, error, created_at, updated_at, expires_at, idempotency_key, customer_id, amount_minor, currency, policy_tool)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.Agent, a.Tool, string(a.Args), a.ArgsDigest, a.Decision, a.Rule, a.PolicyVersion,
			a.Status, a.Error, timeText(now), timeText(now), timeText(a.ExpiresAt), a.IdempotencyKey,
			a.CustomerID, a.AmountMinor, a.Currency, a.PolicyTool); err != nil {
			if a.IdempotencyKey != "" && isUniqueViolation(err, "actions_agent_idempotency_key", "actions.agent, actions.idempotency_key") {
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
	return db.writeLazy(db.outcomeFn(ctx, a, rec))
}

// RecordOutcomeBehind is RecordOutcome as a write-behind (behind.go): it
// queues the outcome and returns at once, so the agent's answer does not
// wait for it. If it is never committed, the action stays executing and
// recovery reconciles it. a and rec must not be changed afterwards.
//
// An executed outcome changes no limit counter and may wait for company
// (patient). A failed one gives the action's use of the limits back, and
// the agent has been told nothing changed: it keeps its place in the queue,
// so every decision this process queues after it counts without it.
func (db *DB) RecordOutcomeBehind(ctx context.Context, a *Action, rec *Record) {
	faultPoint("before-outcome")
	db.queueBehind(db.outcomeFn(ctx, a, rec), a.Status != StatusFailed)
}

// outcomeFn is the write of RecordOutcome.
func (db *DB) outcomeFn(ctx context.Context, a *Action, rec *Record) func(tx *Tx) error {
	ctx = context.WithoutCancel(ctx)
	return func(tx *Tx) error {
		now := db.Now()
		a.UpdatedAt, a.Error = now, cleanText(a.Error)
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
			// Nothing moved: give the limits back, in the minute they were
			// taken (countedAt).
			var prior Action
			var created, counted string
			if err := tx.QueryRowContext(ctx, `SELECT agent, tool, customer_id, amount_minor, currency, created_at, counted_at FROM actions WHERE id = ?`, a.ID).
				Scan(&prior.Agent, &prior.Tool, &prior.CustomerID, &prior.AmountMinor, &prior.Currency, &created, &counted); err != nil {
				return unavailable("read action", err)
			}
			prior.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
			if counted != "" {
				prior.CountedAt, _ = time.Parse(time.RFC3339Nano, counted)
			}
			if err := count(ctx, tx, &prior, countedAt(&prior), -1); err != nil {
				return unavailable("credit limits", err)
			}
		}
		if err := appendRecord(ctx, tx, rec); err != nil {
			return unavailable("append outcome", err)
		}
		return nil
	}
}

// Action returns the action with id, or a not_found error.
func (db *DB) Action(ctx context.Context, id string) (*Action, error) {
	a, err := db.settledAction(ctx, `SELECT `+actionColumns+` FROM actions WHERE id = ?`, id)
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
	a, err := db.settledAction(ctx, `SELECT `+actionColumns+` FROM actions WHERE agent = ? AND idempotency_key = ? AND idempotency_key != ''`, agent, key)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no action with that idempotency key")
	} else if err != nil {
		return nil, unavailable("read action", err)
	}
	return a, nil
}

// settledAction reads one action with q. Only an executing action can have
// an outcome of this process still queued behind it (behind.go), so only
// then does it wait for the write-behinds and read again: the common reads
// (a fresh idempotency key, a decided action) wait for nothing.
func (db *DB) settledAction(ctx context.Context, q string, args ...any) (*Action, error) {
	// Asked before the read: an outcome queued now may commit between the
	// read and the question, which would then find nothing queued and
	// return the row as it was.
	queued := db.behindQueued()
	a, _, err := scanAction(db.db.QueryRowContext(ctx, q, args...))
	if err != nil || a.Status != StatusExecuting || !queued {
		return a, err
	}
	db.settle(ctx) // this process reads its own write-behinds
	a, _, err = scanAction(db.db.QueryRowContext(ctx, q, args...))
	return a, err
}

// ActionsWithStatus returns the actions in status, oldest first, up to limit.
func (db *DB) ActionsWithStatus(ctx context.Context, status string, limit int) ([]*Action, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	return queryActions(ctx, db.db, "list actions",
		`SELECT `+actionColumns+` FROM actions WHERE status = ? ORDER BY created_at LIMIT ?`, status, limit)
}

// Append adds one audit record that belongs to no action state, such as a
// read, in its own transaction.
func (db *DB) Append(ctx context.Context, rec *Record) error {
	return db.write(db.appendFn(ctx, rec))
}

// appendFn is the write of Append and AppendRead: rec, stamped now unless
// it has a time.
func (db *DB) appendFn(ctx context.Context, rec *Record) func(tx *Tx) error {
	return func(tx *Tx) error {
		if rec.Time.IsZero() {
			rec.Time = db.Now()
		}
		if err := appendRecord(ctx, tx, rec); err != nil {
			return unavailable("append", err)
		}
		return nil
	}
}

// Pages of the approval queue.
const (
	DefaultPage = 50  // actions on a page when the caller does not say
	MaxPage     = 500 // the most actions one page may hold
)

// Queue orders.
const (
	OrderExpires = "expires" // soonest to expire first: the order to work through them
	OrderNewest  = "newest"  // most recently requested first
)

// PendingFilter selects one page of the pending actions.
type PendingFilter struct {
	// Agent keeps only the actions this agent asked for; "" keeps all.
	Agent string
	// Order is OrderExpires (the default when "") or OrderNewest.
	Order string
	// After is the id of the last action of the previous page (PendingPage.Next);
	// "" is the first page. Paging by key, not offset, so that actions
	// decided while a person pages do not shift later ones out of sight.
	After string
	// Limit is the page size: 0 means DefaultPage; at most MaxPage.
	Limit int
}

// PendingPage is one page of pending actions and how many there are in all.
type PendingPage struct {
	Actions []*Action
	// Total counts every pending action the filter's Agent selects, not only
	// this page.
	Total int
	// Before counts the actions (of Total) that come before this page.
	Before int
	// Next is PendingFilter.After for the next page, "" on the last page.
	Next string
}

// Pending returns one page of the actions waiting for a person. Every
// pending action is reachable by following Next; nothing is silently cut.
func (db *DB) Pending(ctx context.Context, f PendingFilter) (PendingPage, error) {
	var p PendingPage
	if f.Limit == 0 {
		f.Limit = DefaultPage
	}
	if f.Limit < 0 || f.Limit > MaxPage {
		return p, mandate.Errorf(mandate.EINVALID, "a page holds 1 to %d actions, not %d", MaxPage, f.Limit)
	}
	where, args := "status = ?", []any{StatusPending}
	if f.Agent != "" {
		where, args = where+" AND agent = ?", append(args, f.Agent)
	}
	total := `SELECT COUNT(*) FROM actions WHERE ` + where
	if err := db.db.QueryRowContext(ctx, total, args...).Scan(&p.Total); err != nil {
		return p, unavailable("count pending", err)
	}
	var keys, order string
	switch f.Order {
	case "", OrderExpires:
		keys, order = "expires_at, id", "expires_at, id"
	case OrderNewest:
		keys, order = "created_at, id", "created_at DESC, id DESC"
	default:
		return p, mandate.Errorf(mandate.EINVALID, "order %q: use %s or %s", f.Order, OrderExpires, OrderNewest)
	}
	q := `SELECT ` + actionColumns + ` FROM actions WHERE ` + where
	if f.After != "" {
		cmp := ">"
		if f.Order == OrderNewest {
			cmp = "<"
		}
		// The cursor's row keeps its keys when it is decided, so the page
		// after it stays put.
		var n int
		if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM actions WHERE id = ?`, f.After).Scan(&n); err != nil {
			return p, unavailable("read cursor", err)
		} else if n == 0 {
			return p, mandate.Errorf(mandate.EINVALID, "no action %q to page after", f.After)
		}
		after := fmt.Sprintf(" AND (%s) %s (SELECT %s FROM actions WHERE id = ?)", keys, cmp, keys)
		before := strings.NewReplacer(">", "<=", "<", ">=").Replace(after)
		if err := db.db.QueryRowContext(ctx, total+before, append(args, f.After)...).Scan(&p.Before); err != nil {
			return p, unavailable("count pending", err)
		}
		q += after
		args = append(args, f.After)
	}
	// One more than the page, to know whether there is a next one.
	q += " ORDER BY " + order + " LIMIT ?"
	args = append(args, f.Limit+1)
	acts, err := queryActions(ctx, db.db, "list pending", q, args...)
	if err != nil {
		return p, err
	}
	if len(acts) > f.Limit {
		acts = acts[:f.Limit]
		p.Next = acts[len(acts)-1].ID
	}
	p.Actions = acts
	return p, nil
}

// AgentCount is how many actions one agent has waiting.
type AgentCount struct {
	Agent string
	Count int
}

// PendingAgents lists the agents with pending actions and how many each
// has, most first: the choices of the queue's agent filter.
func (db *DB) PendingAgents(ctx context.Context) ([]AgentCount, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT agent, COUNT(*) FROM actions WHERE status = ? GROUP BY agent ORDER BY COUNT(*) DESC, agent`, StatusPending)
	if err != nil {
		return nil, unavailable("count pending by agent", err)
	}
	defer rows.Close()
	var out []AgentCount
	for rows.Next() {
		var c AgentCount
		if err := rows.Scan(&c.Agent, &c.Count); err != nil {
			return nil, unavailable("count pending by agent", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("count pending by agent", err)
	}
	return out, nil
}

// CountActions counts every action f selects, ignoring its Limit and
// Offset: with Actions it tells a caller how many it did not get.
func (db *DB) CountActions(ctx context.Context, f ActionFilter) (int, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	where, args := actionWhere(f)
	var n int
	if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM actions WHERE `+where, args...).Scan(&n); err != nil {
		return 0, unavailable("count actions", err)
	}
	return n, nil
}

// actionWhere is the WHERE clause and arguments that select f's actions.
func actionWhere(f ActionFilter) (string, []any) {
	q := "1 = 1"
	var args []any
	add := func(cond string, v any) { q += " AND " + cond; args = append(args, v) }
	if f.Status != "" {
		add("status = ?", f.Status)
	}
	if f.Agent != "" {
		add("agent = ?", f.Agent)
	}
	if f.Tool != "" {
		add("tool = ?", f.Tool)
	}
	return q, args
}
