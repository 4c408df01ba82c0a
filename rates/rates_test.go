package rates_test

import (
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/rates"
)

const testRates = "# comment\nbase, USD\nEUR, 1.0842\nJPY, 0.0066\nKWD, 3.2550\nBHD, 2.6525\n"

// TestConvert: exact arithmetic on minor units, rounded up to the base
// currency's minor unit, across 0, 2 and 3 decimal places.
func TestConvert(t *testing.T) {
	tab, err := rates.Parse("rates.csv", []byte(testRates))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		amount, currency string
		want             string // in USD
		rate             string
	}{
		{"30.00", "USD", "30.00", "1"},
		{"41.00", "EUR", "44.46", "1.0842"},   // 44.4522 rounds up
		{"100.00", "EUR", "108.42", "1.0842"}, // exact
		{"6800", "JPY", "44.88", "0.0066"},
		{"1", "JPY", "0.01", "0.0066"}, // 0.0066 rounds up: never to nothing
		{"50.000", "KWD", "162.75", "3.2550"},
		{"0.001", "KWD", "0.01", "3.2550"},
		{"16.900", "BHD", "44.83", "2.6525"}, // 44.82725
	}
	for _, tt := range tests {
		m, err := mandate.ParseMoney(tt.amount, tt.currency)
		if err != nil {
			t.Fatal(err)
		}
		got, rate, err := tab.Convert(m)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.amount, tt.currency, err)
		}
		if got.String() != tt.want || got.Currency != "USD" || rate != tt.rate {
			t.Fatalf("%s %s = %s %s at %s, want %s USD at %s", tt.amount, tt.currency, got, got.Currency, rate, tt.want, tt.rate)
		}
	}
	_, _, err = tab.Convert(mandate.Money{Minor: 100, Currency: "GBP"})
	if mandate.ErrorCode(err) != mandate.EDENIED || !strings.Contains(err.Error(), "GBP has no exchange rate to USD") {
		t.Fatalf("GBP without a rate: %v, want a denied error naming it", err)
	}
}

// TestConvertTooLarge: a result beyond what sums can hold exactly is a
// refusal (audited by the guard), not a wrapped-around number.
func TestConvertTooLarge(t *testing.T) {
	tab, err := rates.Parse("r", []byte("base, USD\nJPY, 1000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tab.Convert(mandate.Money{Minor: 1 << 40, Currency: "JPY"}); mandate.ErrorCode(err) != mandate.EDENIED {
		t.Fatalf("huge conversion: %v, want a denied error", err)
	}
}

// TestConvertIntoThreeDecimals: a KWD base rounds up to the fils.
func TestConvertIntoThreeDecimals(t *testing.T) {
	tab, err := rates.Parse("r", []byte("base, KWD\nUSD, 0.3072\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := tab.Convert(mandate.Money{Minor: 5000, Currency: "USD"}) // 50.00 USD = 15.36 KWD
	if err != nil || got.String() != "15.360" {
		t.Fatalf("50.00 USD = %s KWD (%v), want 15.360", got, err)
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"no base", "EUR, 1.08\n", "no base currency"},
		{"two bases", "base, USD\nbase, EUR\n", "r:2: base currency given twice"},
		{"unknown currency", "base, USD\nEUD, 1.08\n", "r:2: unknown currency \"EUD\""},
		{"float syntax", "base, USD\nEUR, 1e3\n", "not a decimal number"},
		{"negative", "base, USD\nEUR, -1.08\n", "not a decimal number"},
		{"zero", "base, USD\nEUR, 0.000\n", "greater than zero"},
		{"duplicate", "base, USD\nEUR, 1.08\nEUR, 1.09\n", "r:3: EUR is listed twice (also on line 2)"},
		{"base rate not 1", "base, USD\nUSD, 1.1\n", "its rate must be 1"},
		{"no comma", "base, USD\nEUR 1.08\n", "r:2: want"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rates.Parse("r", []byte(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestSet rewrites one line in place, keeps comments, appends a new
// currency, and refuses what would not load.
func TestSet(t *testing.T) {
	out, err := rates.Set("r", []byte(testRates), "EUR", "1.1000")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(testRates, "EUR, 1.0842", "EUR, 1.1000", 1); string(out) != want {
		t.Fatalf("Set EUR:\n%s\nwant:\n%s", out, want)
	}
	out, err = rates.Set("r", out, "GBP", "1.2650")
	if err != nil || !strings.HasSuffix(string(out), "BHD, 2.6525\nGBP, 1.2650\n") {
		t.Fatalf("Set GBP appended: %q, %v", out, err)
	}
	for _, bad := range [][2]string{{"USD", "1.1"}, {"XXX", "1"}, {"EUR", "1,1"}, {"EUR", "abc"}} {
		if _, err := rates.Set("r", []byte(testRates), bad[0], bad[1]); err == nil {
			t.Fatalf("Set %s %s was accepted", bad[0], bad[1])
		}
	}
}

// TestShippedRatesCoverEveryCurrency: the default rates have a rate for
// every currency Mandate accepts, so no shipped currency is refused.
func TestShippedRatesCoverEveryCurrency(t *testing.T) {
	tab := rates.Default()
	for _, c := range []string{"USD", "EUR", "GBP", "CHF", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN", "CZK", "SGD", "HKD",
		"INR", "BRL", "MXN", "ZAR", "CNY", "JPY", "KRW", "ISK", "CLP", "BHD", "KWD", "JOD", "OMR", "TND"} {
		if _, ok := tab.Rate(c); !ok {
			t.Fatalf("the shipped rates have no rate for %s", c)
		}
	}
	if tab.Base != "USD" {
		t.Fatalf("base %s, want USD", tab.Base)
	}
}
