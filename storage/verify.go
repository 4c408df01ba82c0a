package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// VerifyResult describes an intact audit chain.
type VerifyResult struct {
	Count int64  // records checked
	Head  string // hash of the last record; the genesis hash for an empty trail
	// KeyedFrom is the seq of the first keyed record counted (0: none, the
	// trail is unanchored), and KeyID the key they were checked with. The
	// records from KeyedFrom on carry MACs only the key's holder could make.
	KeyedFrom int64
	KeyID     string
}

// Anchored reports whether the checked trail ends in records keyed with
// the audit key: only then could a database writer without the key not
// have rewritten it consistently.
func (r VerifyResult) Anchored() bool { return r.KeyedFrom > 0 }

// ChainError names the first audit record at which the chain is broken.
type ChainError struct {
	Seq    int64
	Reason string // starts with edited, deleted, inserted or reordered
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit record %d: %s", e.Seq, e.Reason)
}

// Verify walks the audit chain from the first record to the last and
// checks that every record is numbered one after its predecessor, names its
// predecessor's hash, and hashes to what it says. It streams the records, so
// memory does not grow with the trail. A broken chain is a *ChainError
// naming the first bad record, and the result then describes the intact
// records before it; other errors mean the database could not be read.
//
// The chain proves that nothing before the head was changed, removed or
// added. It cannot notice records cut off the end, or a tail rewritten in
// full with fresh hashes: keep the head hash that Verify reports somewhere
// else to detect those.
func (db *DB) Verify(ctx context.Context) (VerifyResult, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	rows, err := db.db.QueryContext(ctx, `SELECT `+chainColumns+` FROM audit ORDER BY seq`)
	if err != nil {
		return VerifyResult{}, unavailable("read audit", err)
	}
	defer rows.Close()
	var (
		res   = VerifyResult{Head: genesis}
		prev2 string // hash of the record before the previous one
		bad   *ChainError
		r     Record
	)
	var keyErr *KeyError
	for rows.Next() {
		if err := scanChain(rows, &r); err != nil {
			var ce *ChainError
			if errors.As(err, &ce) {
				bad = ce
				break
			}
			return VerifyResult{}, err
		}
		if r.KeyID == "" && res.KeyedFrom > 0 {
			bad = &ChainError{Seq: r.Seq, Reason: fmt.Sprintf("downgraded: it is not keyed, but the records from %d before it are keyed with audit key %s, so it was written or rewritten without the key", res.KeyedFrom, res.KeyID)}
			break
		}
		if r.KeyID != "" && res.KeyedFrom > 0 && r.KeyID != res.KeyID {
			bad = &ChainError{Seq: r.Seq, Reason: fmt.Sprintf("edited: it names audit key %s, but the records from %d before it are keyed with %s", r.KeyID, res.KeyedFrom, res.KeyID)}
			break
		}
		sum, err := db.verifySum(&r)
		if err != nil {
			errors.As(err, &keyErr)
			break
		}
		if bad = checkLink(&r, res.Count+1, res.Head, prev2, sum); bad != nil {
			break
		}
		if r.KeyID != "" && res.KeyedFrom == 0 {
			res.KeyedFrom, res.KeyID = r.Seq, r.KeyID
		}
		res.Count++
		prev2, res.Head = res.Head, r.Hash
	}
	if err := rows.Err(); err != nil {
		return VerifyResult{}, unavailable("read audit", err)
	}
	rows.Close()
	if keyErr != nil {
		return res, keyErr
	}
	if bad == nil {
		return res, nil
	}
	switch bad.Reason {
	case reasonMovedUp:
		// The record here was written one place later. Either the one
		// written here was deleted and the rest renumbered, or the two were
		// swapped: the next record tells which.
		bad.Reason = db.deletedOrSwapped(ctx, bad.Seq, res.Head)
	case reasonUnplaced:
		bad.Reason = db.placeOf(ctx, &r)
	}
	if bad.Seq == res.Count && bad.Seq > 0 {
		// The break showed at the next record but lies in the last one
		// counted: it is not intact.
		res.Count, res.Head = res.Count-1, prev2
		if res.KeyedFrom > res.Count {
			res.KeyedFrom, res.KeyID = 0, ""
		}
	}
	return res, bad
}

// Head returns the seq and hash of the last audit record: 0 and the genesis
// hash when there is none.
func (db *DB) Head(ctx context.Context) (int64, string, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	var seq int64
	hash := genesis
	err := db.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, "", unavailable("read audit head", err)
	}
	return seq, hash, nil
}

const chainColumns = `seq, time, agent, tool, args, attrs, decision, rule, policy_version, action_id,
	phase, outcome, error, CAST(duration_us AS TEXT), prev_hash, hash, approver, comment,
	credential, changes, trace_id, conversation_id, key_id, shown_customer`

// scanChain reads one row as stored. The time and duration must be in the
// exact form appendRecord writes, since Record.fields re-encodes them for
// hashing: a row whose text differs from its re-encoding was edited.
func scanChain(rows *sql.Rows, r *Record) error {
	var ts, args, attrs, dur, changes string
	*r = Record{}
	if err := rows.Scan(&r.Seq, &ts, &r.Agent, &r.Tool, &args, &attrs, &r.Decision, &r.Rule, &r.PolicyVersion,
		&r.ActionID, &r.Phase, &r.Outcome, &r.Error, &dur, &r.PrevHash, &r.Hash, &r.Approver, &r.Comment,
		&r.Credential, &changes, &r.TraceID, &r.ConversationID, &r.KeyID, &r.ShownCustomer); err != nil {
		return unavailable("scan audit", err)
	}
	r.Args, r.Attrs, r.Changes = []byte(args), []byte(attrs), []byte(changes)
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || timeText(t) != ts {
		return &ChainError{Seq: r.Seq, Reason: "edited: its time is not in the form it was written in"}
	}
	us, err := strconv.ParseInt(dur, 10, 64)
	if err != nil || strconv.FormatInt(us, 10) != dur {
		return &ChainError{Seq: r.Seq, Reason: "edited: its duration is not in the form it was written in"}
	}
	r.Time, r.Duration = t, time.Duration(us)*time.Microsecond
	return nil
}

// Placeholder reasons that Verify resolves with one more query, once the
// walk has stopped.
const (
	reasonMovedUp  = "moved up"
	reasonUnplaced = "unplaced"
)

// checkLink checks r, read where record want was expected, against prev, the
// hash of record want-1, and prev2, that of record want-2, hashing with sum
// (plain or keyed, see verifySum). It returns nil when r is intact, else
// what most likely happened.
func checkLink(r *Record, want int64, prev, prev2 string, sum func(string, int64, []string) string) *ChainError {
	switch {
	case r.Seq == want+1:
		return &ChainError{Seq: want, Reason: fmt.Sprintf("deleted: record %d is missing", want)}
	case r.Seq > want:
		return &ChainError{Seq: want, Reason: fmt.Sprintf("deleted: records %d to %d are missing", want, r.Seq-1)}
	case r.Seq < want:
		return &ChainError{Seq: r.Seq, Reason: "inserted: sequence numbers start at 1"}
	}
	f := r.hashed()
	selfOK := sum(r.PrevHash, r.Seq, f) == r.Hash
	switch {
	case r.PrevHash == prev && selfOK:
		return nil
	case r.PrevHash == prev:
		return &ChainError{Seq: r.Seq, Reason: "edited: its content does not match its hash"}
	case want == 1 && selfOK:
		return &ChainError{Seq: r.Seq, Reason: "inserted: the first record does not start from the genesis hash"}
	case want > 1 && r.PrevHash == prev2:
		before := fmt.Sprintf("record %d", want-2)
		if want == 2 {
			before = "the start of the chain"
		}
		return &ChainError{Seq: want - 1, Reason: fmt.Sprintf("inserted: record %d links straight to %s, so record %d is not part of the chain", want, before, want-1)}
	case sum(r.PrevHash, r.Seq+1, f) == r.Hash:
		return &ChainError{Seq: r.Seq, Reason: reasonMovedUp}
	case selfOK:
		return &ChainError{Seq: want - 1, Reason: fmt.Sprintf("edited: record %d was rewritten with a new hash; record %d still names its original hash", want-1, want)}
	case sum(prev, r.Seq, f) == r.Hash:
		return &ChainError{Seq: r.Seq, Reason: "edited: its prev_hash was changed"}
	}
	return &ChainError{Seq: r.Seq, Reason: reasonUnplaced}
}

// placeOf explains a record that neither follows its predecessor nor hashes
// correctly where it is: if the record whose hash it names is elsewhere in
// the chain, it was moved from just after that one; if no record has that
// hash, it was never part of the chain.
func (db *DB) placeOf(ctx context.Context, r *Record) string {
	sum, kerr := db.verifySum(r)
	if kerr != nil {
		sum = func(string, int64, []string) string { return "" }
	}
	var seq int64
	err := db.db.QueryRowContext(ctx, `SELECT seq FROM audit WHERE hash = ? ORDER BY seq LIMIT 1`, r.PrevHash).Scan(&seq)
	switch {
	case err == nil && sum(r.PrevHash, seq+1, r.hashed()) == r.Hash:
		return fmt.Sprintf("reordered: this record was written as %d, after the record now at %d", seq+1, seq)
	case errors.Is(err, sql.ErrNoRows) && r.PrevHash != genesis:
		return "inserted: no record in the chain has the hash it names as its predecessor"
	}
	return fmt.Sprintf("reordered: this record was not written at seq %d; it neither follows record %d nor matches its own hash here", r.Seq, r.Seq-1)
}

// deletedOrSwapped explains a record at seq that was written at seq+1: if
// the record at seq+1 was written at seq after prev, the two were swapped;
// otherwise the original record seq was deleted and the rest renumbered.
func (db *DB) deletedOrSwapped(ctx context.Context, seq int64, prev string) string {
	deleted := fmt.Sprintf("deleted: this record was written as %d and renumbered, so the original record %d was removed", seq+1, seq)
	rows, err := db.db.QueryContext(ctx, `SELECT `+chainColumns+` FROM audit WHERE seq = ?`, seq+1)
	if err != nil {
		return deleted
	}
	defer rows.Close()
	var next Record
	if !rows.Next() || scanChain(rows, &next) != nil {
		return deleted
	}
	sum, err := db.verifySum(&next)
	if err != nil {
		return deleted
	}
	if next.PrevHash == prev && sum(prev, seq, next.hashed()) == next.Hash {
		return fmt.Sprintf("reordered: records %d and %d were swapped", seq, seq+1)
	}
	return deleted
}
