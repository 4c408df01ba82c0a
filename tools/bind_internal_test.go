package tools

import (
	"testing"

	"github.com/mandatehq/mandate"
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
