package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// One live policy. Every process that decides records each policy it loads
// (RecordPolicy), at start and on every hot reload, and the newest load is
// the live policy (LivePolicy). A process that acts on a decision checks,
// inside the write transaction that records what it does, that the policy it
// holds is the live one (see Decide and ClaimApprovedUnder): a check made
// before that transaction could be overtaken by a reload in another process.

// PolicyLoad is one recorded load of a policy by a process.
type PolicyLoad struct {
	Seq     int64
	Version string
	// Model and Policy are the texts loaded; LivePolicy fills them in,
	// PolicyLoads leaves them empty.
	Model, Policy         string
	ModelFile, PolicyFile string // absolute paths, or "embedded …"
	// Command is what loaded it: "serve start", "admin reload", …
	Command string
	// Identity is the agent a serve process acts as; empty for admin.
	Identity string
	PID      int
	Host     string
	LoadedAt time.Time
}

// Where says where and by what the policy was loaded, for messages.
func (l *PolicyLoad) Where() string {
	return l.Files() + ", " + loadedBy(l.Command, l.Identity, l.PID, l.Host, l.LoadedAt)
}

// loadedBy says which process recorded a load, and when, for messages.
func loadedBy(command, identity string, pid int, host string, at time.Time) string {
	cmd, when, _ := strings.Cut(command, " ")
	who := "`mandate " + cmd + "`"
	if identity != "" {
		who += " (agent " + identity + ")"
	}
	if when != "" {
		when = " on " + when
	}
	return fmt.Sprintf("loaded by %s, pid %d on host %s, at %s%s", who, pid, host, at.UTC().Format(time.RFC3339), when)
}

// Files names the policy and model files of the load.
func (l *PolicyLoad) Files() string {
	return fmt.Sprintf("%s with model %s", l.PolicyFile, l.ModelFile)
}

// PolicyRef names the policy a process holds: its version and the files it
// was read from.
type PolicyRef struct {
	Version, ModelFile, PolicyFile string
	// Rates and RatesFile, when set, are the version and file of the
	// exchange rates a decision converted money with: Decide and
	// ClaimApprovedUnder then refuse unless they are the live rates too
	// (RecordRates).
	Rates, RatesFile string
}

// StalePolicyError refuses an action because the policy a process holds is
// not the live one, or because no policy has been recorded yet (Live nil).
// Its message says which file and version the process holds and which is
// live, and where the live one was loaded from.
type StalePolicyError struct {
	Held PolicyRef
	Live *PolicyLoad
}

func (e *StalePolicyError) Error() string {
	held := fmt.Sprintf("this process holds policy version %s from %s (model %s)", e.Held.Version, e.Held.PolicyFile, e.Held.ModelFile)
	if e.Live == nil {
		return held + ", but no live policy is recorded in the database yet: start `mandate serve` or `mandate admin` with the live policy once, so that it is recorded, then try again"
	}
	return fmt.Sprintf("%s, but the live policy is version %s from %s; nothing was done. Use the live policy files (--policy/--model, or run from the directory that holds them), or restart this process",
		held, e.Live.Version, e.Live.Where())
}

// Unwrap makes the error a conflict with a message safe to show.
func (e *StalePolicyError) Unwrap() error {
	return mandate.Errorf(mandate.ECONFLICT, "%s", e.Error())
}

// RecordPolicy records that a process loaded a policy; from now on it is the
// live policy. The texts are stored once per version.
func (db *DB) RecordPolicy(ctx context.Context, l *PolicyLoad) error {
	if l.Version == "" {
		return mandate.Errorf(mandate.EINVALID, "record policy: no version")
	}
	return db.write(func(tx *Tx) error {
		now := db.Now()
		l.LoadedAt = now
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_texts (version, model, policy, recorded_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (version) DO NOTHING`, l.Version, l.Model, l.Policy, timeText(now)); err != nil {
			return unavailable("record policy text", err)
		}
		// RETURNING rather than LastInsertId, which PostgreSQL's driver lacks.
		if err := tx.QueryRowContext(ctx, `INSERT INTO policy_loads (version, model_file, policy_file, command, identity, pid, host, loaded_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`, l.Version, l.ModelFile, l.PolicyFile, l.Command, l.Identity, l.PID, l.Host, timeText(now)).Scan(&l.Seq); err != nil {
			return unavailable("record policy load", err)
		}
		return nil
	})
}

// LivePolicy returns the newest recorded policy load with its texts, or
// nil when none is recorded.
func (db *DB) LivePolicy(ctx context.Context) (*PolicyLoad, error) {
	return livePolicy(ctx, db.db, true)
}

// LiveVersion is the version of the newest recorded policy load, "" when
// none is recorded: LivePolicy without the texts, for the lookups' view.
func (db *DB) LiveVersion(ctx context.Context) (string, error) {
	l, err := livePolicy(ctx, db.db, false)
	if err != nil || l == nil {
		return "", err
	}
	return l.Version, nil
}

const loadColumns = `l.seq, l.version, l.model_file, l.policy_file, l.command, l.identity, l.pid, l.host, l.loaded_at`

func livePolicy(ctx context.Context, q querier, texts bool) (*PolicyLoad, error) {
	var l PolicyLoad
	var at string
	query := `SELECT ` + loadColumns + `, '', '' FROM policy_loads l ORDER BY l.seq DESC LIMIT 1`
	if texts {
		query = `SELECT ` + loadColumns + `, t.model, t.policy FROM policy_loads l JOIN policy_texts t ON t.version = l.version ORDER BY l.seq DESC LIMIT 1`
	}
	err := q.QueryRowContext(ctx, query).Scan(&l.Seq, &l.Version, &l.ModelFile, &l.PolicyFile, &l.Command, &l.Identity, &l.PID, &l.Host, &at, &l.Model, &l.Policy)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, unavailable("read live policy", err)
	}
	l.LoadedAt, _ = time.Parse(time.RFC3339Nano, at)
	return &l, nil
}

// PolicyLoads returns the recorded loads, newest first, up to limit (0: 100),
// without their texts.
func (db *DB) PolicyLoads(ctx context.Context, limit int) ([]*PolicyLoad, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.db.QueryContext(ctx, `SELECT `+loadColumns+` FROM policy_loads l ORDER BY l.seq DESC LIMIT ?`, limit)
	if err != nil {
		return nil, unavailable("list policy loads", err)
	}
	defer rows.Close()
	var out []*PolicyLoad
	for rows.Next() {
		var l PolicyLoad
		var at string
		if err := rows.Scan(&l.Seq, &l.Version, &l.ModelFile, &l.PolicyFile, &l.Command, &l.Identity, &l.PID, &l.Host, &at); err != nil {
			return nil, unavailable("scan policy load", err)
		}
		l.LoadedAt, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, &l)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("list policy loads", err)
	}
	return out, nil
}

// checkLive returns a *StalePolicyError unless held is the live policy,
// read inside tx so that no reload can be recorded between the check and
// what tx then records.
//
// With no policy recorded at all it fails closed. Every process that
// decides records its policy when it starts, so a database with actions to
// approve or recover normally has one; an empty record means only a client
// (the approvals CLI) has touched this database since it was upgraded.
// Letting that client record its own policy on first use would let whoever
// runs it first, with any --policy file, define the live policy: exactly
// what this check exists to stop.
func checkLive(ctx context.Context, tx *Tx, held PolicyRef) error {
	live, err := livePolicy(ctx, tx, false)
	if err != nil {
		return err
	}
	if live == nil || live.Version != held.Version {
		return &StalePolicyError{Held: held, Live: live}
	}
	return nil
}
