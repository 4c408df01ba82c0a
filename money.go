package mandate

import (
	"math"
	"strconv"
	"strings"
)

// currencies lists the ISO 4217 codes Mandate accepts and how many decimal
// places each has. A code not listed here is refused rather than guessed.
var currencies = map[string]int{
	"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2,
	"SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "SGD": 2, "HKD": 2,
	"INR": 2, "BRL": 2, "MXN": 2, "ZAR": 2, "CNY": 2,
	"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0,
	"BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}

// CurrencyExponent reports the number of decimal places of an ISO 4217
// currency, and whether Mandate knows the currency at all.
func CurrencyExponent(currency string) (int, bool) {
	e, ok := currencies[currency]
	return e, ok
}

// Money is an amount in integer minor units (cents for USD) of a currency.
// It is never a float: arithmetic and storage use Minor.
type Money struct {
	Minor    int64  `json:"minor"`
	Currency string `json:"currency"`
}

// maxMinor bounds amounts far below int64 overflow so that sums of many
// amounts stay exact.
const maxMinor = int64(1) << 50

// ParseMoney parses a decimal string such as "30.00" or "30.5" as an amount
// of currency. It refuses signs, exponents, NaN, more decimal places than the
// currency has, and amounts too large to be real.
func ParseMoney(s, currency string) (Money, error) {
	exp, ok := CurrencyExponent(currency)
	if !ok {
		return Money{}, Errorf(EINVALID, "unknown currency %q: use an ISO 4217 code such as USD or EUR", currency)
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") || !Digits(whole) || !Digits(frac) {
		return Money{}, Errorf(EINVALID, "amount %q is not a decimal number like \"30.00\"", TruncateBytes(s, 40))
	}
	if len(frac) > exp {
		if exp == 0 {
			return Money{}, Errorf(EINVALID, "amount %q has decimals, but %s has no minor unit", TruncateBytes(s, 40), currency)
		}
		return Money{}, Errorf(EINVALID, "amount %q has more than %d decimal places for %s", TruncateBytes(s, 40), exp, currency)
	}
	frac += strings.Repeat("0", exp-len(frac))
	whole = strings.TrimLeft(whole, "0")
	if len(whole)+len(frac) > 16 {
		return Money{}, Errorf(EINVALID, "amount %q is too large", TruncateBytes(s, 40))
	}
	minor, err := strconv.ParseInt("0"+whole+frac, 10, 64)
	if err != nil || minor > maxMinor {
		return Money{}, Errorf(EINVALID, "amount %q is too large", TruncateBytes(s, 40))
	}
	return Money{Minor: minor, Currency: currency}, nil
}

// Digits reports whether s holds only the ASCII digits 0-9 ("" does):
// the check every decimal reader (amounts, rates) makes on its parts.
func Digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats the amount as a decimal string with exactly as many decimal
// places as the currency has, e.g. "30.00". It carries no currency code.
func (m Money) String() string {
	exp := currencies[m.Currency]
	neg := m.Minor < 0
	v := m.Minor
	if neg {
		v = -v
	}
	s := strconv.FormatInt(v, 10)
	if exp > 0 {
		if len(s) <= exp {
			s = strings.Repeat("0", exp-len(s)+1) + s
		}
		s = s[:len(s)-exp] + "." + s[len(s)-exp:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// Major returns the amount in major units for comparison in policy
// conditions such as "amount <= 50.00". It is exact for comparisons: IEEE
// division is correctly rounded, so Minor/100 is the same float64 as the
// decimal literal that names the same amount. Never do arithmetic with it.
func (m Money) Major() float64 {
	return float64(m.Minor) / math.Pow10(currencies[m.Currency])
}
