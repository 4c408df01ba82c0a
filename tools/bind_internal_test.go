package tools

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// TestPlainDecimal: a JSON number's text is rewritten without exponent or
// valueless zeros, exactly, and numbers no amount could be are refused
// before a long string is built.
func TestPlainDecimal(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"30", "30", ""},
		{"30.000000000000001", "30.000000000000001", ""},
		{"30.000", "30", ""},
		{"0.10", "0.1", ""},
		{"1e5", "100000", ""},
		{"1E+2", "100", ""},
		{"3.05e1", "30.5", ""},
		{"3050e-2", "30.5", ""},
		{"5e-3", "0.005", ""},
		{"-5", "-5", ""},
		{"0e-999", "0", ""},
		{"1e999", "", `amount "1e999" is too large`},
		{"1e-999", "", `amount "1e-999" has more decimal places than any currency`},
		{"1e1000", "", `amount "1e1000" is not a decimal number like "30.00"`},
	}
	for _, tt := range tests {
		got, err := plainDecimal(tt.in)
		if tt.err != "" {
			if mandate.ErrorCode(err) != mandate.EINVALID || mandate.ErrorMessage(err) != tt.err {
				t.Errorf("plainDecimal(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("plainDecimal(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestValidValueAccepts: real emails, E.164 phones, names and addresses
// from many places pass; the refusals are in TestBindRefusesBadArguments.
func TestValidValueAccepts(t *testing.T) {
	ok := map[string][]string{
		"email":            {"ada@example.com", "ada.lovelace+shop@mail.example.co.uk", "o'brien@example.ie", "x@xn--bcher-kva.example"},
		"phone":            {"+441234567890", "+12025550143", "+33142345678", "+861012345678"},
		"name":             {"Ada Lovelace", "Zoë O'Brien-Łukasz", "José María Pérez", "山田 太郎", "Nguyễn Văn A", "Dr. M. Curie"},
		"shipping_address": {"12 St James's Square, London", "36 Quai de Béthune, 75004 Paris", "Flat 2/3, 10 Main St. #4", "Straße des 17. Juni 135, Berlin"},
	}
	for field, values := range ok {
		for _, v := range values {
			if err := validValue(field, v); err != nil {
				t.Errorf("validValue(%s, %q) = %v, want ok", field, v, err)
			}
		}
	}
	bad := map[string][]string{
		"email": {"ada@localhost", "ada@@example.com", ".ada@example.com", "ada..l@example.com", "\"ada l\"@example.com", "ada@-example.com", "ada@example.123", "ada (home)@example.com", "ada@exämple.com"},
		"phone": {"+0441234567", "+44", "00441234567890", "+44-1234-567890"},
		"name":  {" Ada", "Ada  Lovelace", "Ada\tLovelace", "{{7*7}}", "Ada\u200bLovelace"},
	}
	for field, values := range bad {
		for _, v := range values {
			if err := validValue(field, v); mandate.ErrorCode(err) != mandate.EINVALID {
				t.Errorf("validValue(%s, %q) = %v, want invalid", field, v, err)
			}
		}
	}
}

// TestStoredArgsOfAnEarlierVersion: a pending update_account recorded
// before reason was required, with a phone in the format then accepted,
// can still be approved: stored arguments are checked by their digest,
// not by today's input rules, and the system of record checks the value.
func TestStoredArgsOfAnEarlierVersion(t *testing.T) {
	ctx := context.Background()
	e := newApprovalEnv(t, mandate.DefaultPolicy)
	args := []byte(`{"customer_id":"cus_ada","field":"phone","value":"+1 202 555 0100"}`)
	act := &storage.Action{ID: "act_0000000000000000old1", Agent: "demo-agent", Tool: "update_account", Args: args,
		Decision: policy.RequireApproval, Rule: "policy.csv:30", Status: storage.StatusPending, ExpiresAt: e.now().Add(time.Hour), CustomerID: "cus_ada"}
	if err := e.d.DB.RecordAttempt(ctx, act, &storage.Record{Agent: "demo-agent", Tool: "update_account", Args: args,
		Decision: policy.RequireApproval, Outcome: storage.StatusPending}); err != nil {
		t.Fatal(err)
	}
	done, err := Approve(ctx, e.d, act.ID, "bob", "")
	if err != nil || done.Status != storage.StatusExecuted {
		t.Fatalf("Approve = %+v, %v; want executed", done, err)
	}
	if c, err := e.st.Customer(ctx, "cus_ada"); err != nil || c.Phone != "+1 202 555 0100" {
		t.Fatalf("cus_ada phone = %q, %v", c.Phone, err)
	}
}

// TestCanonicalPlainFastPath: a map of plain values, encoded once, gives
// the very bytes of the decode-and-encode round trip that canonical uses for
// everything else, so no audited digest changes; values that would come out
// differently take the round trip.
func TestCanonicalPlainFastPath(t *testing.T) {
	roundTrip := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			return "{}"
		}
		var m any
		if err := json.Unmarshal(b, &m); err != nil {
			return "{}"
		}
		out, _ := json.Marshal(m)
		return string(out)
	}
	cases := []map[string]any{
		{"currency": "USD", "order_total": 120.5, "order_refunded": 0.0, "order_status": "delivered", "customer_age_days": 400.25},
		{"z": 1, "a": int64(-3), "m": nil, "b": true, "big": int64(1 << 53), "tiny": 1e-7, "huge": 1e21, "neg0": math.Copysign(0, -1)},
		{"html": "<a href='x'>&</a>", "sep": "line\u2028para\u2029", "ctl": "tab\tnul\x00", "uni": "café ☕", "quote": `"\`},
		{"nested": map[string]any{"y": []any{1.5, "two", nil, map[string]any{"k": false}}, "x": 0.1}},
		{"nan": math.NaN()},                        // no encoding either way: {}
		{"bad": "\xff\xfe"},                        // invalid UTF-8: the round trip writes it differently
		{"toobig": int64(1<<53 + 1)},               // loses precision in a float64
		{"struct": struct{ B, A int }{B: 1, A: 2}}, // fields in declaration order: the round trip sorts them
	}
	for _, c := range cases {
		if got, want := string(canonical(c)), roundTrip(c); got != want {
			t.Errorf("canonical(%v) = %s, want the round trip's %s", c, got, want)
		}
	}
	if !plainJSON(cases[0]) || !plainJSON(cases[1]) || !plainJSON(cases[2]) || !plainJSON(cases[3]) || !plainJSON(cases[4]) {
		t.Error("the facts the rules test should take the fast path")
	}
	for _, c := range cases[5:] {
		if plainJSON(c) {
			t.Errorf("%v took the fast path; its one encoding differs from the round trip's or fails", c)
		}
	}
}
