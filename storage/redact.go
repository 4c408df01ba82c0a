package storage

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
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
// arguments, attributes, changes, error and comment, for exports that leave
// the operator's hands. Everything else is kept. The hash still covers the
// original record, so a redacted export cannot be verified against the
// chain.
//
// It collects the personal values first (by the name that holds them, or
// the field update_account changes), then masks each of them wherever it
// appears: update_account's new phone number is masked in its reason too,
// whichever of the two keys comes first.
func (r *Record) Redacted() *Record {
	out := *r
	docs := []*json.RawMessage{&out.Args, &out.Attrs, &out.Changes} // Changes: before and after by field
	values := make([]any, len(docs))
	var seen []masked
	for i, doc := range docs {
		values[i] = decodeJSON(*doc)
		redactValue(values[i], &seen, nil)
	}
	// The longest first, so a value inside another is not masked half.
	slices.SortStableFunc(seen, func(a, b masked) int { return len(b.value) - len(a.value) })
	for i, doc := range docs {
		*doc = redactJSON(*doc, values[i], seen)
	}
	out.Error = redactText(r.Error, seen)
	out.Comment = redactText(r.Comment, seen)
	return &out
}

// notJSON stands for a document that is not JSON (decodeJSON).
type notJSON struct{}

// decodeJSON decodes doc, keeping numbers exactly as written; nil for an
// empty doc, notJSON{} for one that is not JSON.
func decodeJSON(doc json.RawMessage) any {
	if len(doc) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber() // keep amounts exactly as written
	var v any
	if err := dec.Decode(&v); err != nil {
		return notJSON{}
	}
	return v
}

// redactJSON is doc, decoded as v, with personal values masked. Text that
// is not JSON is not shown at all.
func redactJSON(doc json.RawMessage, v any, known []masked) json.RawMessage {
	if len(doc) == 0 {
		return doc
	}
	if _, bad := v.(notJSON); bad {
		return json.RawMessage(`"[redacted]"`)
	}
	b, err := json.Marshal(redactValue(v, new([]masked), known))
	if err != nil {
		return json.RawMessage(`"[redacted]"`)
	}
	return b
}

// redactValue masks v's personal values by the names that hold them and
// adds each to seen; any other string has the known values and email
// addresses masked in it.
func redactValue(v any, seen *[]masked, known []masked) any {
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
				out[k] = redactValue(x, seen, known)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = redactValue(x, seen, known)
		}
		return out
	case string:
		return redactText(v, known)
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
