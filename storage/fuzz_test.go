package storage

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzRecordHash checks the audit record encoding: the hash is injective
// (changing any one field, the seq or the previous hash, or moving bytes
// from one field to the next, changes it) and the export JSON always parses.
func FuzzRecordHash(f *testing.F) {
	f.Add(int64(1), int64(1764061200123456000), "demo-agent", "refund_order", `{"amount":"30.00","order_id":"ord_1001"}`, `{"currency":"USD"}`,
		"allow", "p, support_agent, refund_order, allow", "v1", "act_1", "attempt", "", "", int64(1500))
	f.Add(int64(2), int64(0), "", "", "", "", "", "", "", "", "outcome", "failed", "backend timed out", int64(0))
	f.Add(int64(9), int64(-1), "a", "ab", "{}", "[]", "b", "", "", "", "", "", "\x00\xff", int64(-5))
	f.Add(int64(1<<62), int64(1), "\"", "\\", `"x"`, `null`, "\u2028", "é", "", "", "", "", "", int64(1<<40))
	f.Fuzz(func(t *testing.T, seq, nanos int64, agent, tool, args, attrs, decision, rule, version, actionID, phase, outcome, errText string, us int64) {
		r := &Record{
			Seq: seq, Time: time.Unix(0, nanos), Agent: agent, Tool: tool, Args: json.RawMessage(args), Attrs: json.RawMessage(attrs),
			Decision: decision, Rule: rule, PolicyVersion: version, ActionID: actionID, Phase: phase, Outcome: outcome,
			Error: errText, Duration: time.Duration(us) * time.Microsecond, PrevHash: genesis,
		}
		fields := r.fields()
		h := hashRecord(genesis, seq, fields)
		if h2 := hashRecord(genesis, seq, r.fields()); h2 != h {
			t.Fatalf("hash is not deterministic: %s then %s", h, h2)
		}
		if hashRecord(genesis, seq+1, fields) == h {
			t.Fatalf("seq %d and %d hash alike", seq, seq+1)
		}
		if hashRecord(genesis[1:]+"1", seq, fields) == h {
			t.Fatal("a different previous hash gives the same hash")
		}
		for i := range fields {
			changed := append([]string(nil), fields...)
			changed[i] += "x"
			if hashRecord(genesis, seq, changed) == h {
				t.Fatalf("appending to field %d does not change the hash", i)
			}
			if fields[i] != "" {
				changed[i] = fields[i][:len(fields[i])-1]
				if hashRecord(genesis, seq, changed) == h {
					t.Fatalf("shortening field %d does not change the hash", i)
				}
			}
			if i+1 < len(fields) && fields[i] != "" {
				// Move the last byte of field i to the front of field i+1:
				// the concatenation is the same, the fields are not.
				moved := append([]string(nil), fields...)
				moved[i], moved[i+1] = fields[i][:len(fields[i])-1], fields[i][len(fields[i])-1:]+fields[i+1]
				if hashRecord(genesis, seq, moved) == h {
					t.Fatalf("moving a byte from field %d to field %d does not change the hash", i, i+1)
				}
			}
		}
		if len(fields) != 13 {
			t.Fatalf("fields() has %d entries; update this fuzz target with the new field", len(fields))
		}

		r.Hash = h
		b, err := r.MarshalJSON()
		if err != nil {
			// Only arguments or attributes that are not JSON may fail.
			if json.Valid([]byte(args)) && json.Valid([]byte(attrs)) {
				t.Fatalf("MarshalJSON(%+v): %v", r, err)
			}
			return
		}
		var back struct {
			Seq      int64     `json:"seq"`
			Agent    string    `json:"agent"`
			Error    string    `json:"error"`
			Hash     string    `json:"hash"`
			Duration int64     `json:"duration"`
			Time     time.Time `json:"time"`
		}
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("MarshalJSON output does not parse: %v\n%s", err, b)
		}
		if back.Seq != seq || back.Hash != h || back.Duration != r.Duration.Microseconds() || !back.Time.Equal(r.Time) {
			t.Fatalf("round trip: got seq %d hash %s duration %d, want %d %s %d", back.Seq, back.Hash, back.Duration, seq, h, r.Duration.Microseconds())
		}
		if utf8.ValidString(agent) && back.Agent != agent || utf8.ValidString(errText) && back.Error != errText {
			t.Fatalf("round trip: agent %q error %q, want %q %q", back.Agent, back.Error, agent, errText)
		}
	})
}
