package storage

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestMasks(t *testing.T) {
	tests := []struct {
		name, in, want string
		mask           func(string) string
	}{
		{"email", "ada@example.com", "a***@example.com", MaskEmail},
		{"email with no mailbox", "@example.com", "***@example.com", MaskEmail},
		{"not an email", "ada", "***", MaskEmail},
		{"email with a non-ASCII mailbox", "édith@example.fr", "é***@example.fr", MaskEmail},
		{"phone", "+441234567890", "+44******7890", MaskPhone},
		{"phone with spaces", "+1 202 555 0143", "+12*****0143", MaskPhone},
		{"phone without a plus", "(312) 555-0181", "31****0181", MaskPhone},
		{"short phone", "12345", "***", MaskPhone},
		{"name", "Ada Lovelace", "A*** L***", MaskName},
		{"name with accents", "Inés  García", "I*** G***", MaskName},
		{"blank name", " ", "***", MaskName},
		{"address", "12 St James's Square, London", "[redacted address]", maskAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.mask(tt.in); got != tt.want {
				t.Fatalf("mask(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	tests := []struct {
		name        string
		args, attrs string
		err         string
		wantArgs    string
		wantAttrs   string
		wantErr     string
	}{
		{name: "find by email",
			args: `{"email":"ada@example.com"}`, wantArgs: `{"email":"a***@example.com"}`},
		{name: "update email",
			args:     `{"customer_id":"cus_ada","field":"email","value":"ada.lovelace@example.com"}`,
			attrs:    `{"customer_age_days":999,"field":"email"}`,
			err:      "another customer account already uses the email ada.lovelace@example.com",
			wantArgs: `{"customer_id":"cus_ada","field":"email","value":"a***@example.com"}`, wantAttrs: `{"customer_age_days":999,"field":"email"}`,
			wantErr: "another customer account already uses the email a***@example.com"},
		{name: "update phone",
			args:     `{"customer_id":"cus_ada","field":"phone","value":"+441234000000"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"phone","value":"+44******0000"}`},
		{name: "invalid phone quoted in the error",
			args:     `{"customer_id":"cus_ada","field":"phone","value":"call 0800 ADA"}`,
			err:      `"call 0800 ADA" is not a phone number`,
			wantArgs: `{"customer_id":"cus_ada","field":"phone","value":"***"}`,
			wantErr:  `"***" is not a phone number`},
		{name: "update address",
			args:     `{"customer_id":"cus_ada","field":"shipping_address","value":"1 Navy Yard Drive"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"shipping_address","value":"[redacted address]"}`},
		{name: "update name",
			args:     `{"customer_id":"cus_ada","field":"name","value":"Ada King"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"name","value":"A*** K***"}`},
		{name: "update an unknown field",
			args:     `{"customer_id":"cus_ada","field":"date_of_birth","value":"1815-12-10"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"date_of_birth","value":"[redacted]"}`},
		{name: "refund keeps everything",
			args:      `{"amount":"30.00","order_id":"ord_1001","reason":"Item arrived scratched"}`,
			attrs:     `{"amount":30,"currency":"USD","order_total":120.00}`,
			err:       "order ord_1001 has only 90.00 USD left to refund",
			wantArgs:  `{"amount":"30.00","order_id":"ord_1001","reason":"Item arrived scratched"}`,
			wantAttrs: `{"amount":30,"currency":"USD","order_total":120.00}`,
			wantErr:   "order ord_1001 has only 90.00 USD left to refund"},
		{name: "email in a free-text reason",
			args:     `{"order_id":"ord_1001","reason":"asked by grace.h@example.co.uk by phone"}`,
			wantArgs: `{"order_id":"ord_1001","reason":"asked by g***@example.co.uk by phone"}`},
		{name: "nested",
			args:     `{"customer":{"name":"Ada Lovelace","phone":"+441234567890","id":"cus_ada"},"list":[{"email":"x@y.io"}]}`,
			wantArgs: `{"customer":{"id":"cus_ada","name":"A*** L***","phone":"+44******7890"},"list":[{"email":"x***@y.io"}]}`},
		// The value is masked wherever it appears, whichever key comes
		// first: in the reason next to it, in the attributes, the error.
		{name: "new phone in the reason",
			args:     `{"customer_id":"cus_ada","field":"phone","reason":"customer asked to change it to +441234567890; verified by callback","value":"+441234567890"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"phone","reason":"customer asked to change it to +44******7890; verified by callback","value":"+44******7890"}`},
		{name: "new name in the reason",
			args:     `{"value":"Ada King","reason":"now Ada King after marriage","field":"name","customer_id":"cus_ada"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"name","reason":"now A*** K*** after marriage","value":"A*** K***"}`},
		{name: "new address in the reason",
			args:     `{"customer_id":"cus_ada","field":"shipping_address","reason":"moved to 1 Navy Yard Drive","value":"1 Navy Yard Drive"}`,
			wantArgs: `{"customer_id":"cus_ada","field":"shipping_address","reason":"moved to [redacted address]","value":"[redacted address]"}`},
		{name: "personal value of the attributes in the arguments",
			args:      `{"note":"call Ada Lovelace back"}`,
			attrs:     `{"name":"Ada Lovelace"}`,
			wantArgs:  `{"note":"call A*** L*** back"}`,
			wantAttrs: `{"name":"A*** L***"}`},
		{name: "not JSON",
			args: `{"email":"ada@exa`, wantArgs: `"[redacted]"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Record{Seq: 7, Time: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), Agent: "demo-agent", Tool: "update_account",
				Args: json.RawMessage(tt.args), Decision: "allow", ActionID: "act_1", Error: tt.err, Hash: "h"}
			if tt.attrs != "" {
				r.Attrs = json.RawMessage(tt.attrs)
			}
			orig := *r
			got := r.Redacted()
			if string(got.Args) != tt.wantArgs {
				t.Fatalf("args = %s, want %s", got.Args, tt.wantArgs)
			}
			if string(got.Attrs) != tt.wantAttrs {
				t.Fatalf("attrs = %s, want %s", got.Attrs, tt.wantAttrs)
			}
			if got.Error != tt.wantErr {
				t.Fatalf("error = %q, want %q", got.Error, tt.wantErr)
			}
			if got.Seq != orig.Seq || got.Agent != orig.Agent || got.Tool != orig.Tool || got.ActionID != orig.ActionID ||
				got.Hash != orig.Hash || !got.Time.Equal(orig.Time) {
				t.Fatalf("Redacted changed a field it must keep: %+v", got)
			}
			if string(r.Args) != tt.args || r.Error != tt.err {
				t.Fatalf("Redacted changed the original: %+v", r)
			}
			if tt.args != "" && !strings.HasPrefix(tt.name, "not") && !json.Valid(got.Args) {
				t.Fatalf("redacted args are not JSON: %s", got.Args)
			}
		})
	}
}
