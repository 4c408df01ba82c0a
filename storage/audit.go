package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"hash"
	"strconv"
	"strings"
	"time"
)

// Audit phases: the attempt is written before anything is done, the outcome
// after; approval records a person's decision on a pending action.
const (
	PhaseAttempt  = "attempt"
	PhaseOutcome  = "outcome"
	PhaseApproval = "approval"
)

// Outcomes of an allowed lookup's record (phase attempt): OutcomeRead when
// the answer showed what was asked for, OutcomeNotFound when the system of
// record (or the trail, for get_action_status) had nothing to show, and
// OutcomeUnread when the read failed (the system of record unavailable, a
// timeout, the call cancelled): in both, no data was shown.
const (
	OutcomeRead     = "read"
	OutcomeNotFound = "not_found"
	OutcomeUnread   = "unread"
)

// IsLookupOutcome reports whether outcome is one an allowed lookup's record
// carries: such a record has no action row.
func IsLookupOutcome(outcome string) bool {
	return outcome == OutcomeRead || outcome == OutcomeNotFound || outcome == OutcomeUnread
}

// Record is one audit record. The JSON field names are the export format.
type Record struct {
	Seq           int64           `json:"seq"`
	Time          time.Time       `json:"time"`
	Agent         string          `json:"agent"`
	Tool          string          `json:"tool"`
	Args          json.RawMessage `json:"args"`
	Attrs         json.RawMessage `json:"attrs"`
	Decision      string          `json:"decision"`
	Rule          string          `json:"rule"`
	PolicyVersion string          `json:"policy_version"`
	ActionID      string          `json:"action_id"`
	Phase         string          `json:"phase"`
	Outcome       string          `json:"outcome"`
	Error         string          `json:"error"`
	// Approver is who decided, or tried to decide, a pending action, on
	// approval records; Comment is what they wrote. Both are empty on
	// other records and on records written before they existed.
	Approver string `json:"approver"`
	Comment  string `json:"comment"`
	// Credential is the credential the call was made with, never its
	// secret: key:<id> for an API key, jwt:<jti>, jwt-client:<client_id>
	// or jwt-sub:<sub> for an OAuth access token. Empty over stdio and on
	// a person's approval records.
	Credential string `json:"credential"`
	// Changes is what an executed action changed in the system of record,
	// as a Changes document (see Changes), on its outcome record; empty on
	// other records. TraceID is the W3C trace-id of the call (32 lowercase
	// hex digits) and ConversationID the conversation the client named in
	// the request's _meta; both empty when the client sent none.
	Changes        json.RawMessage `json:"changes"`
	TraceID        string          `json:"trace_id"`
	ConversationID string          `json:"conversation_id"`
	// KeyID names the audit key whose MAC is this record's hash; empty on
	// plain records (mac.go).
	KeyID string `json:"key_id,omitempty"`
	// ShownCustomer is the customer whose data a lookup's answer showed
	// (find_customer's match, get_order's order's customer, the customer of
	// the action get_action_status reported), so a customer's lineage finds
	// every record through which an agent saw them even when the
	// arguments did not name them; empty on other records.
	ShownCustomer string `json:"shown_customer,omitempty"`
	// Duration is how long the step took, in microseconds in the export.
	Duration time.Duration `json:"-"`
	PrevHash string        `json:"prev_hash"`
	Hash     string        `json:"hash"`
}

// MarshalJSON writes the record with duration as integer microseconds.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // rules hold <= and >; keep them readable
	err := enc.Encode(struct {
		plain
		Duration  int64  `json:"duration"`
		LeafIndex uint64 `json:"leaf_index"` // in the Merkle tree (merkle.go)
	}{plain(r), r.Duration.Microseconds(), r.LeafIndex()})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

// genesis is the previous hash of the first record.
const genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// hashRecord chains a record to its predecessor: SHA-256 over the previous
// hash and every stored field, each length-prefixed so no two different
// records can encode alike.
func hashRecord(prev string, seq int64, f []string) string {
	return sumRecord(newSHA256(), prev, seq, f)
}

// sumRecord writes hashRecord's input to h and returns its sum: h is
// SHA-256 for plain records and HMAC-SHA-256 for keyed ones (mac.go).
func sumRecord(h hash.Hash, prev string, seq int64, f []string) string {
	h.Write([]byte(prev))
	var n [8]byte
	put := func(s string) {
		l := uint64(len(s))
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put(strconv.FormatInt(seq, 10))
	for _, s := range f {
		put(s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fields lists the stored form of a record's original columns, in column
// order. hashed adds the later ones.
func (r *Record) fields() []string {
	return []string{
		timeText(r.Time), r.Agent, r.Tool, string(orEmptyObject(r.Args)), string(orEmptyObject(r.Attrs)),
		r.Decision, r.Rule, r.PolicyVersion, r.ActionID, r.Phase, r.Outcome, r.Error,
		strconv.FormatInt(r.Duration.Microseconds(), 10),
	}
}

// hashed lists what a record's hash covers: fields, then approver and
// comment only when either is set or any later column is. Each later
// column (credential, ...) that is set adds two fields, its name and its
// value, so a record with none of them hashes as before, and no two
// records encode alike. A record with both empty (every record
// written before the columns existed, and every non-approval record) hashes
// exactly as it always did, so old chains still verify; one with either set
// hashes two more length-prefixed fields, so no record with them encodes
// like one without (the field count differs, and length prefixes make the
// split into fields unique).
//
// The columns added since (credential, changes, trace_id, conversation_id,
// key_id, shown_customer)
// follow one rule: when any is set, approver and comment are appended even
// if empty, then for each column that is set, in that fixed order, its name
// and its value. A record with none set hashes as before.
func (r *Record) hashed() []string {
	f := r.fields()
	later := []string{"credential", r.Credential, "changes", string(r.Changes), "trace_id", r.TraceID, "conversation_id", r.ConversationID, "key_id", r.KeyID,
		"shown_customer", r.ShownCustomer}
	anyLater := false
	for i := 1; i < len(later); i += 2 {
		anyLater = anyLater || later[i] != ""
	}
	if r.Approver != "" || r.Comment != "" || anyLater {
		f = append(f, r.Approver, r.Comment)
	}
	for i := 0; i < len(later); i += 2 {
		if later[i+1] != "" {
			f = append(f, later[i], later[i+1])
		}
	}
	return f
}

func orEmptyObject(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return b
}

// cleanText makes free text from outside (a backend's problem detail, a
// person's comment or reason, a token's id) storable as the same text on
// both engines before it is hashed: PostgreSQL's text cannot hold NUL,
// which JSON can carry as \u0000, so each NUL becomes U+FFFD.
func cleanText(s string) string {
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// appendRecord adds r at the head of the chain inside tx, which must be a
// write (IMMEDIATE) transaction so the head cannot move under it, even from
// another process. It sets r.Seq, r.PrevHash and r.Hash, and cleans r's
// free-text fields (cleanText).
func appendRecord(ctx context.Context, tx *Tx, r *Record) error {
	r.Error, r.Comment, r.Credential, r.ConversationID = cleanText(r.Error), cleanText(r.Comment), cleanText(r.Credential), cleanText(r.ConversationID)
	r.Rule = cleanText(r.Rule)                   // a refusal's rule may quote a backend's answer
	r.ShownCustomer = cleanText(r.ShownCustomer) // an id a backend gave
	var seq int64
	prev := genesis
	if tx.head != nil {
		// This transaction holds the write lock and appended the head
		// itself (with this process's key), so it is still the head.
		seq, prev = tx.head.seq, tx.head.hash
	} else {
		var headKey string
		if err := tx.QueryRowContext(ctx, // MAX(seq) plans as a search, so queryplan_test can tell it from a scan
			`SELECT seq, hash, key_id FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)`).Scan(&seq, &prev, &headKey); err != nil && err != sql.ErrNoRows {
			return err
		}
		if err := tx.db.checkHeadKey(seq, headKey); err != nil {
			return err
		}
	}
	var sum func(string, int64, []string) string
	r.KeyID, sum = tx.db.writeSum()
	r.Seq, r.PrevHash = seq+1, prev
	f := r.fields()
	r.Hash = sum(prev, r.Seq, r.hashed())
	_, err := tx.ExecContext(ctx, `
		INSERT INTO audit (seq, time, agent, tool, args, attrs, decision, rule, policy_version,
			action_id, phase, outcome, error, duration_us, prev_hash, hash, approver, comment,
			credential, changes, trace_id, conversation_id, key_id, shown_customer)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Seq, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11],
		r.Duration.Microseconds(), r.PrevHash, r.Hash, r.Approver, r.Comment,
		r.Credential, string(r.Changes), r.TraceID, r.ConversationID, r.KeyID, r.ShownCustomer)
	if err != nil {
		return err
	}
	tx.head = &chainHead{seq: r.Seq, hash: r.Hash}
	if tx.db.postgres {
		return appendLeaf(ctx, tx, r) // the Merkle tree, in the same transaction (merkle.go)
	}
	return tx.db.leaves.add(r) // the Merkle tree, in a later commit (merkle.go growTree)
}
