package tools

import (
	"context"
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
