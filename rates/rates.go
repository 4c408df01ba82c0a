// Package rates converts money into the operator's base currency, so that
// money limits mean the same whatever currency an order is in: a limit of
// 500.00 in 24 h is 500.00 of the base currency across USD, EUR, JPY and
// KWD refunds alike.
//
// The rates live in a small text file (rates.csv next to policy.csv): the
// base currency, then one exact decimal rate per currency. Conversion is
// exact rational arithmetic on integer minor units, never float, and rounds
// up to the base currency's minor unit, so a converted amount is never less
// than the real one and many small refunds cannot each round down to
// nothing under a limit.
package rates

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/mandatehq/mandate"
)

// Table is one loaded, validated rates file. It is immutable once loaded.
type Table struct {
	// Name is the file it was read from ("embedded rates.csv" for the
	// shipped copy).
	Name string
	// Base is the base currency, e.g. "USD".
	Base string
	// Version names the file's content: the first 16 hex digits of its
	// SHA-256. Every decision records it next to the rate it used.
	Version string

	data []byte              // the file as read
	text map[string]string   // currency → rate as written ("1" for Base)
	rats map[string]*big.Rat // currency → exact rate
}

// maxBaseMinor bounds converted amounts well below int64 overflow, as
// mandate.ParseMoney bounds amounts, so sums of many stay exact.
const maxBaseMinor = int64(1) << 50

// Parse reads a rates file. Problems are reported with name:line. It
// refuses unknown currency codes, a missing or repeated base, a currency
// listed twice, and rates that are not positive exact decimals.
func Parse(name string, data []byte) (*Table, error) {
	t := &Table{Name: name, data: bytes.Clone(data), text: map[string]string{}, rats: map[string]*big.Rat{}}
	sum := sha256.Sum256(data)
	t.Version = hex.EncodeToString(sum[:8])
	var problems []string
	bad := func(line int, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: ", name, line)+fmt.Sprintf(format, args...))
	}
	seen := map[string]int{}
	for i, raw := range strings.Split(string(data), "\n") {
		line := i + 1
		s := strings.TrimSpace(raw)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		key, val, ok := strings.Cut(s, ",")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || strings.Contains(val, ",") {
			bad(line, "want \"CODE, RATE\" or \"base, CODE\", got %q", mandate.TruncateBytes(s, 40))
			continue
		}
		if key == "base" {
			if t.Base != "" {
				bad(line, "base currency given twice (first %s)", t.Base)
				continue
			}
			if _, known := mandate.CurrencyExponent(val); !known {
				bad(line, "unknown base currency %q: use an ISO 4217 code such as USD", mandate.TruncateBytes(val, 40))
				continue
			}
			t.Base = val
			continue
		}
		if _, known := mandate.CurrencyExponent(key); !known {
			bad(line, "unknown currency %q: use an ISO 4217 code Mandate knows, such as EUR", mandate.TruncateBytes(key, 40))
			continue
		}
		if prev, dup := seen[key]; dup {
			bad(line, "%s is listed twice (also on line %d)", key, prev)
			continue
		}
		seen[key] = line
		r, err := ParseRate(val)
		if err != nil {
			bad(line, "%s: %v", key, err)
			continue
		}
		t.text[key], t.rats[key] = val, r
	}
	if t.Base == "" && len(problems) == 0 {
		problems = append(problems, fmt.Sprintf("%s: no base currency: add a line \"base, USD\"", name))
	}
	if t.Base != "" {
		if r, ok := t.rats[t.Base]; ok && r.Cmp(big.NewRat(1, 1)) != 0 {
			bad(seen[t.Base], "%s is the base currency, so its rate must be 1, not %s", t.Base, t.text[t.Base])
		}
		t.text[t.Base], t.rats[t.Base] = "1", big.NewRat(1, 1)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return t, nil
}

// ParseRate reads a rate: a positive decimal such as "1.0842" or "0.00072",
// at most 12 decimal places. It is exact: no float is involved.
func ParseRate(s string) (*big.Rat, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || (dot && frac == "") || !mandate.Digits(whole) || !mandate.Digits(frac) || len(s) > 24 {
		return nil, fmt.Errorf("rate %q is not a decimal number like 1.0842", mandate.TruncateBytes(s, 40))
	}
	if len(frac) > 12 {
		return nil, fmt.Errorf("rate %q has more than 12 decimal places", mandate.TruncateBytes(s, 40))
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok || r.Sign() <= 0 {
		return nil, fmt.Errorf("rate %q must be greater than zero", mandate.TruncateBytes(s, 40))
	}
	return r, nil
}

// Text returns the file the rates were read from, as read.
func (t *Table) Text() string { return string(t.data) }

// Rate returns the rate of currency as written in the file ("1" for the
// base currency), and whether there is one.
func (t *Table) Rate(currency string) (string, bool) {
	r, ok := t.text[currency]
	return r, ok
}

// Currencies returns the currencies that have a rate, sorted, the base
// currency included.
func (t *Table) Currencies() []string {
	out := make([]string, 0, len(t.text))
	for c := range t.text {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Convert returns m in the base currency, rounded up to the base currency's
// minor unit, and the rate it used as written. A currency without a rate is
// a denied error: with no rate, no money limit can be applied, so the
// action must not happen (fail closed).
func (t *Table) Convert(m mandate.Money) (mandate.Money, string, error) {
	r, ok := t.rats[m.Currency]
	if !ok {
		return mandate.Money{}, "", mandate.Errorf(mandate.EDENIED,
			"%s has no exchange rate to %s in the operator's rates, so the money limits cannot be applied to it", m.Currency, t.Base)
	}
	fromExp, _ := mandate.CurrencyExponent(m.Currency)
	toExp, _ := mandate.CurrencyExponent(t.Base)
	// base minor = minor × rate × 10^toExp / 10^fromExp, rounded up.
	num := new(big.Int).Mul(big.NewInt(m.Minor), r.Num())
	num.Mul(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(toExp)), nil))
	den := new(big.Int).Mul(r.Denom(), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(fromExp)), nil))
	q, rem := new(big.Int).QuoRem(num, den, new(big.Int))
	if rem.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > maxBaseMinor || q.Int64() < -maxBaseMinor {
		// Not the agent's input to fix (an order's total can be this large):
		// refused and audited like a missing rate.
		return mandate.Money{}, "", mandate.Errorf(mandate.EDENIED, "%s %s is too large to convert to %s", m, m.Currency, t.Base)
	}
	return mandate.Money{Minor: q.Int64(), Currency: t.Base}, t.text[m.Currency], nil
}

// Set returns the rates file data with currency's rate set to rate: the
// line that names currency is rewritten in place, keeping every comment
// and the order of the others, or a line is appended. The result is
// validated as a whole before it is returned.
func Set(name string, data []byte, currency, rate string) ([]byte, error) {
	t, err := Parse(name, data)
	if err != nil {
		return nil, err
	}
	if _, known := mandate.CurrencyExponent(currency); !known {
		return nil, fmt.Errorf("unknown currency %q: use an ISO 4217 code Mandate knows, such as EUR", mandate.TruncateBytes(currency, 40))
	}
	if currency == t.Base {
		return nil, fmt.Errorf("%s is the base currency: its rate is always 1 (to change the base, edit the base line of %s)", currency, name)
	}
	if _, err := ParseRate(rate); err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	replaced := false
	for i, raw := range lines {
		s := strings.TrimSpace(raw)
		if key, _, ok := strings.Cut(s, ","); ok && !strings.HasPrefix(s, "#") && strings.TrimSpace(key) == currency {
			lines[i] = currency + ", " + rate
			replaced = true
		}
	}
	out := []byte(strings.Join(lines, "\n"))
	if !replaced {
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		out = append(out, currency+", "+rate+"\n"...)
	}
	if _, err := Parse(name, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Live holds the rates every decision in a process uses, swapped whole
// when the file is reloaded: a decision reads one Table and uses only it.
type Live struct{ t atomic.Pointer[Table] }

// NewLive returns a Live holding t.
func NewLive(t *Table) *Live {
	l := &Live{}
	l.t.Store(t)
	return l
}

// Table returns the current rates.
func (l *Live) Table() *Table { return l.t.Load() }

// Swap makes t the current rates.
func (l *Live) Swap(t *Table) { l.t.Store(t) }

// Default returns the shipped rates (mandate.DefaultRates).
func Default() *Table {
	t, err := Parse("embedded rates.csv", mandate.DefaultRates)
	if err != nil {
		panic("the embedded rates.csv does not load: " + err.Error())
	}
	return t
}
