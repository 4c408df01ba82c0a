// Command verifyproof checks a Mandate proof bundle as docs/attestation.md
// specifies it, with the Go standard library and the note package only:
// go run ./examples/verifyproof BUNDLE.json VERIFIER_KEY [VERIFIER_KEY...]
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: verifyproof BUNDLE.json VERIFIER_KEY...")
	}
	var b struct {
		Checkpoint string
		Entries    []struct {
			LeafIndex uint64 `json:"leaf_index"`
			Record    json.RawMessage
			Proof     []string `json:"inclusion_proof"`
		}
	}
	raw, err := os.ReadFile(os.Args[1])
	check(err, json.Unmarshal(raw, &b))
	var vs []note.Verifier
	for _, k := range os.Args[2:] {
		v, err := note.NewVerifier(k)
		check(err)
		vs = append(vs, v)
	}
	n, err := note.Open([]byte(b.Checkpoint), note.VerifierList(vs...))
	check(err)
	lines := strings.Split(n.Text, "\n") // origin, size, base64 root
	size, err1 := strconv.ParseUint(lines[1], 10, 64)
	root, err2 := base64.StdEncoding.DecodeString(lines[2])
	check(err1, err2)
	if !slices.ContainsFunc(n.Sigs, func(s note.Signature) bool { return s.Name == lines[0] }) {
		fail(fmt.Sprintf("the checkpoint is of the log %q, but no key named so signed it", lines[0]))
	}
	for _, e := range b.Entries {
		var r struct {
			Seq, Duration                                                                     int64
			Time                                                                              time.Time
			Args, Attrs, Changes                                                              json.RawMessage
			Agent, Tool, Decision, Rule, Phase, Outcome, Error, Approver, Comment, Credential string
			PolicyVersion                                                                     string `json:"policy_version"`
			ActionID                                                                          string `json:"action_id"`
			TraceID                                                                           string `json:"trace_id"`
			ConvID                                                                            string `json:"conversation_id"`
			KeyID                                                                             string `json:"key_id"`
			ShownCustomer                                                                     string `json:"shown_customer"`
		}
		check(json.Unmarshal(e.Record, &r))
		exportKeys(e.Record)
		var buf bytes.Buffer
		put := func(s string) { binary.Write(&buf, binary.LittleEndian, uint64(len(s))); buf.WriteString(s) }
		put(strconv.FormatInt(r.Seq, 10))
		for _, f := range []string{r.Time.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"), r.Agent, r.Tool, compact(r.Args), compact(r.Attrs),
			r.Decision, r.Rule, r.PolicyVersion, r.ActionID, r.Phase, r.Outcome, r.Error, strconv.FormatInt(r.Duration, 10)} {
			put(f)
		}
		// Columns added later: approver and comment when any is set, then name and value of each set one.
		extra := [][2]string{{"credential", r.Credential}, {"changes", text(r.Changes)}, {"trace_id", r.TraceID}, {"conversation_id", r.ConvID}, {"key_id", r.KeyID},
			{"shown_customer", r.ShownCustomer}}
		anyExtra := false
		for _, kv := range extra {
			anyExtra = anyExtra || kv[1] != ""
		}
		if r.Approver != "" || r.Comment != "" || anyExtra {
			put(r.Approver)
			put(r.Comment)
		}
		for _, kv := range extra {
			if kv[1] != "" {
				put(kv[0])
				put(kv[1])
			}
		}
		h := hash(0, buf.Bytes()) // RFC 6962 inclusion (RFC 9162 section 2.1.3.2)
		fn, sn := e.LeafIndex, size-1
		if uint64(r.Seq) != fn+1 || fn > sn {
			fail(fmt.Sprintf("record %d: wrong leaf index %d", r.Seq, fn))
		}
		for _, s := range e.Proof {
			p, err := base64.StdEncoding.DecodeString(s)
			check(err)
			if sn == 0 {
				fail(fmt.Sprintf("record %d: proof too long", r.Seq))
			}
			if fn&1 == 1 || fn == sn {
				h = hash(1, p, h)
				for fn&1 == 0 && fn != 0 {
					fn, sn = fn>>1, sn>>1
				}
			} else {
				h = hash(1, h, p)
			}
			fn, sn = fn>>1, sn>>1
		}
		if sn != 0 || !bytes.Equal(h, root) {
			fail(fmt.Sprintf("record %d is NOT in the checkpoint's tree", r.Seq))
		}
		fmt.Printf("ok: record %d (action %s, %s) is in %s at size %d\n", r.Seq, r.ActionID, r.Phase, lines[0], size)
	}
}

// exported lists the keys of a record as the export writes them.
var exported = strings.Fields(`seq time agent tool args attrs decision rule policy_version action_id phase outcome
	error approver comment credential changes trace_id conversation_id key_id shown_customer prev_hash hash duration leaf_index`)

// exportKeys fails unless every key of the record is one the export writes,
// spelled exactly so and given once. encoding/json matches keys in any
// case, keeps the last of duplicates and skips unknown ones, where jq or
// a SIEM may read another value ("decision":"deny" then "Decision":"allow"):
// the leaf must cover what every reader sees.
func exportKeys(rec json.RawMessage) {
	dec := json.NewDecoder(bytes.NewReader(rec))
	_, err := dec.Token() // the record's {
	check(err)
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		check(err)
		k, _ := t.(string)
		if seen[k] || !slices.Contains(exported, k) {
			fail(fmt.Sprintf("a record is not as the export writes it: key %q is repeated or unknown", k))
		}
		seen[k] = true
		var v json.RawMessage
		check(dec.Decode(&v))
	}
}

// text is a JSON string's value, or other JSON as compact text ("" if absent).
func text(j json.RawMessage) string {
	var s string
	if len(j) == 0 || string(j) == "null" || json.Unmarshal(j, &s) == nil {
		return s
	}
	return compact(j)
}

func compact(j json.RawMessage) string {
	var c bytes.Buffer
	check(json.Compact(&c, j))
	return c.String()
}

func hash(prefix byte, parts ...[]byte) []byte {
	s := sha256.New()
	s.Write([]byte{prefix})
	for _, p := range parts {
		s.Write(p)
	}
	return s.Sum(nil)
}

func check(errs ...error) {
	for _, err := range errs {
		if err != nil {
			fail(err.Error())
		}
	}
}

func fail(msg string) { fmt.Fprintln(os.Stderr, "verifyproof:", msg); os.Exit(1) }
