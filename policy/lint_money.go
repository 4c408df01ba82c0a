package policy

import (
	"regexp"
	"strings"
)

// orderCurrencyMoney are the money attributes in the order's own currency
// (policy/schema.go): a fixed number compared with one of them means a
// different sum in every currency.
var orderCurrencyMoney = regexp.MustCompile(`\b(amount|order_total|order_refunded|order_refundable)\b`)

// literalComparison finds a comparison with a bare number on either side
// (`> 50.00`, `50 <=`), not a factor such as `> 0.5 * order_total`.
var literalComparison = regexp.MustCompile(`(?:[<>]=?|[=!]=)\s*-?[0-9][0-9.]*\s*(?:$|[^*/\s0-9.])|(?:^|[^*/\s0-9.])\s*[0-9][0-9.]*\s*(?:[<>]=?|[=!]=)`)

// MoneyFindings warns about money limits written in the order's currency:
// a condition comparing amount, order_total, order_refunded or
// order_refundable with a fixed number, without testing currency. Since
// limits are in the base currency (amount_base, order_total_base,
// agent_refunded_24h), `amount <= 50.00` lets 50.000 KWD through as if it
// were 50 dollars. Comparisons of these attributes with each other
// (`amount > order_refundable`) are what they are for and are not flagged.
func MoneyFindings(p *Policy) []Finding {
	var out []Finding
	for _, r := range p.Rules {
		c := r.Cond
		if !orderCurrencyMoney.MatchString(c) || !literalComparison.MatchString(strings.TrimSpace(c)) || strings.Contains(c, AttrCurrency) {
			continue
		}
		out = append(out, Finding{File: r.File, Line: r.Line, Severity: SevWarning,
			Message: "compares money in the order's own currency (" + strings.Join(uniq(orderCurrencyMoney.FindAllString(c, -1)), ", ") +
				") with a fixed number, which means a different sum in every currency: write limits with amount_base or order_total_base (base currency), or test currency too"})
	}
	return out
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
