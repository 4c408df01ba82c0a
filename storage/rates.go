package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mandatehq/mandate"
)

// Live rates. Money limits are written in one base currency, so the rates
// that convert into it are part of what a decision is made under. Every
// process that records its policy (serve, admin) also records the exchange
// rates it loads (RecordRates), at start and on every reload, and the newest
// load is the live rates (LiveRates). An agent's action whose facts were
// converted with other rates is refused by the guard, which reads the live
// version in the statement that counts usage (Usage.LiveRates), so two
// serve processes with different rates files never judge the same refund
// differently. An approval, which decides in the approving process with
// its own rates, is refused unless they are the live ones (see
// PolicyRef.Rates): the approvals CLI records nothing, so an approver's
// `--rates other.csv` cannot move an amount under their limit.

// RatesLoad is one recorded load of the exchange rates by a process.
type RatesLoad struct {
	Seq int64
	// Version and Base are the rates file's (rates.Table); Rates is its
	// text; File is its absolute path, or "embedded rates.csv".
	Version, Base, Rates, File string
	// Command, Identity, PID and Host are as in PolicyLoad.
	Command  string
	Identity string
	PID      int
	Host     string
	LoadedAt time.Time
}

// Where says where and by what the rates were loaded, for messages.
func (l *RatesLoad) Where() string {
	return fmt.Sprintf("%s (base %s), %s", l.File, l.Base, loadedBy(l.Command, l.Identity, l.PID, l.Host, l.LoadedAt))
}

// StaleRatesError refuses an approval because the exchange rates it
// converted money with (Held.Rates) are not the live ones, or because no
// rates have been recorded yet (Live nil).
type StaleRatesError struct {
	Held PolicyRef
	Live *RatesLoad
}

func (e *StaleRatesError) Error() string {
	held := fmt.Sprintf("this process converts money with exchange rates version %s from %s", e.Held.Rates, e.Held.RatesFile)
	if e.Live == nil {
		return held + ", but no live rates are recorded in the database yet: start `mandate serve` or `mandate admin` with the live rates once, so that they are recorded, then try again"
	}
	return fmt.Sprintf("%s, but the live rates are version %s from %s; nothing was done. Use the live rates file (--rates, or run from the directory that holds it), or restart this process",
		held, e.Live.Version, e.Live.Where())
}

// Unwrap makes the error a conflict with a message safe to show.
func (e *StaleRatesError) Unwrap() error {
	return mandate.Errorf(mandate.ECONFLICT, "%s", e.Error())
}

// RecordRates records that a process loaded exchange rates; from now on
// they are the live rates.
func (db *DB) RecordRates(ctx context.Context, l *RatesLoad) error {
	if l.Version == "" || l.Base == "" {
		return mandate.Errorf(mandate.EINVALID, "record rates: no version or base currency")
	}
	return db.write(func(tx *Tx) error {
		now := db.Now()
		l.LoadedAt = now
		if err := tx.QueryRowContext(ctx, `INSERT INTO rates_loads (version, base, rates, file, command, identity, pid, host, loaded_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`, l.Version, l.Base, l.Rates, l.File, l.Command, l.Identity, l.PID, l.Host, timeText(now)).Scan(&l.Seq); err != nil {
			return unavailable("record rates load", err)
		}
		return nil
	})
}

// LiveRates returns the newest recorded rates load, or nil when none is
// recorded.
func (db *DB) LiveRates(ctx context.Context) (*RatesLoad, error) {
	return liveRates(ctx, db.db)
}

func liveRates(ctx context.Context, q querier) (*RatesLoad, error) {
	var l RatesLoad
	var at string
	err := q.QueryRowContext(ctx, `SELECT seq, version, base, rates, file, command, identity, pid, host, loaded_at FROM rates_loads ORDER BY seq DESC LIMIT 1`).
		Scan(&l.Seq, &l.Version, &l.Base, &l.Rates, &l.File, &l.Command, &l.Identity, &l.PID, &l.Host, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, unavailable("read live rates", err)
	}
	l.LoadedAt, _ = time.Parse(time.RFC3339Nano, at)
	return &l, nil
}

// checkHeld refuses, inside tx, a decision under held unless held is the
// live policy (checkLive) and, when it names rates, they are the live rates
// (with none recorded it fails closed, as checkLive does). A refusal
// returns the prefix of its audit record's error, "stale policy: " or
// "stale rates: "; any other error returns "".
func checkHeld(ctx context.Context, tx *Tx, held PolicyRef) (string, error) {
	if err := checkLive(ctx, tx, held); err != nil {
		var stale *StalePolicyError
		if errors.As(err, &stale) {
			return "stale policy: ", err
		}
		return "", err
	}
	if held.Rates == "" {
		return "", nil
	}
	live, err := liveRates(ctx, tx)
	if err != nil {
		return "", err
	}
	if live == nil || live.Version != held.Rates {
		return "stale rates: ", &StaleRatesError{Held: held, Live: live}
	}
	return "", nil
}
