package storage

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// piiMasks masks the value of each argument or attribute that holds a
// customer's personal data, by name. update_account's "value" is masked by
// the mask of the "field" it changes.
var piiMasks = map[string]func(string) string{
	"email":            MaskEmail,
	"phone":            MaskPhone,
	"shipping_address": maskAddress,
	"address":          maskAddress,
	"name":             MaskName,
}

// emailPattern finds email addresses in free text: a reason, an error.
var emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)

// Redacted returns a copy of r with customer personal data masked in its
// arguments, attributes and error, for exports that leave the operator's
// hands. Everything else is kept. The hash still covers the original
// record, so a redacted export cannot be verified against the chain.
func (r *Record) Redacted() *Record {
	out := *r
	var seen []masked // the personal values found, to mask in the error too
	out.Args = redactJSON(r.Args, &seen)
	out.Attrs = redactJSON(r.Attrs, &seen)
	out.Changes = redactJSON(r.Changes, &seen) // before and after by field: see Changes
	out.Error = redactText(r.Error, seen)
	out.Comment = redactText(r.Comment, seen)
	return &out
}

// redactJSON masks personal values in a JSON document. Text that is not
// JSON is not shown at all.
func redactJSON(doc json.RawMessage, seen *[]masked) json.RawMessage {
	if len(doc) == 0 {
		return doc
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber() // keep amounts exactly as written
	var v any
	if err := dec.Decode(&v); err != nil {
		return json.RawMessage(`"[redacted]"`)
	}
	b, err := json.Marshal(redactValue(v, seen))
	if err != nil {
		return json.RawMessage(`"[redacted]"`)
	}
	return b
}

func redactValue(v any, seen *[]masked) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			s, isString := x.(string)
			mask, personal := piiMasks[k]
			switch {
			case isString && personal:
				out[k] = mask(s)
				*seen = append(*seen, masked{s, out[k].(string)})
			case isString && k == "value" && hasField(v):
				out[k] = maskField(v["field"].(string), s)
				*seen = append(*seen, masked{s, out[k].(string)})
			case (k == "before" || k == "after") && hasField(v) && personalChange(v["field"].(string)):
				// A changed customer field (Changes): masked as the field,
				// whatever its type, so no personal value slips through.
				out[k] = nil
				if isString {
					out[k] = maskField(v["field"].(string), s)
					*seen = append(*seen, masked{s, out[k].(string)})
				} else if x != nil {
					out[k] = "[redacted]"
				}
			default:
				out[k] = redactValue(x, seen)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = redactValue(x, seen)
		}
		return out
	case string:
		return redactText(v, nil)
	}
	return v
}

func hasField(obj map[string]any) bool {
	_, ok := obj["field"].(string)
	return ok
}

// maskField masks value as the customer field it is the new value of; a
// field without a known mask is hidden whole.
func maskField(field, value string) string {
	if mask, ok := piiMasks[field]; ok {
		return mask(value)
	}
	return "[redacted]"
}

// masked is a personal value and its mask.
type masked struct{ value, mask string }

// redactText masks every personal value already found in the record, such
// as an invalid phone number quoted in an error message, and any email
// address in free text.
func redactText(s string, values []masked) string {
	for _, v := range values {
		if len(strings.TrimSpace(v.value)) >= 4 { // shorter would mask unrelated words
			s = strings.ReplaceAll(s, v.value, v.mask)
		}
	}
	return emailPattern.ReplaceAllStringFunc(s, MaskEmail)
}

// MaskEmail keeps the first character of the mailbox and the domain, so
// people can still tell addresses apart: "a***@example.com".
func MaskEmail(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "***"
	}
	first, _ := utf8.DecodeRuneInString(s)
	if at == 0 || first == utf8.RuneError {
		return "***" + s[at:]
	}
	return string(first) + "***" + s[at:]
}

// MaskPhone keeps the leading +, the first two and the last four digits:
// "+441234567890" becomes "+44******7890". Short numbers are hidden whole.
func MaskPhone(s string) string {
	var digits []rune
	for _, c := range s {
		if unicode.IsDigit(c) {
			digits = append(digits, c)
		}
	}
	if len(digits) <= 6 {
		return "***"
	}
	prefix := ""
	if strings.HasPrefix(strings.TrimSpace(s), "+") {
		prefix = "+"
	}
	return prefix + string(digits[:2]) + strings.Repeat("*", len(digits)-6) + string(digits[len(digits)-4:])
}

// MaskName keeps the initial of each word: "Ada Lovelace" becomes
// "A*** L***".
func MaskName(s string) string {
	words := strings.Fields(s)
	if len(words) == 0 {
		return "***"
	}
	for i, w := range words {
		r, _ := utf8.DecodeRuneInString(w)
		words[i] = string(r) + "***"
	}
	return strings.Join(words, " ")
}

func maskAddress(string) string { return "[redacted address]" }
