package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mark3labs/mcp-go/mcp"
)

// maxText bounds free-text arguments (reasons, new values): longer text is
// refused before it reaches a rule, a log or the audit trail.
const maxText = 1000

// validator is implemented by argument structs that check themselves.
type validator interface{ validate() error }

// fields is a tool's arguments read strictly: each key exactly as sent and
// present once, each value the JSON text the agent wrote.
type fields map[string]json.RawMessage

// rawArguments returns what bind should read for a call: the arguments'
// own JSON text when mcp-go kept it (it does for every request that came
// as JSON, over any transport), else the decoded value.
func rawArguments(p mcp.CallToolParams) any {
	if len(p.RawArguments) > 0 {
		return p.RawArguments
	}
	return p.Arguments
}

// argObject reads a tool's arguments strictly. encoding/json matches keys
// case-insensitively and with Unicode folding, keeps the last of duplicate
// keys and reads numbers as float64; any of these lets an agent send text
// that a client, gateway or log reads one way and Mandate another (the
// "cuſtomer_id" that Go reads as customer_id). So the JSON text is walked
// token by token: a duplicate key is refused, values keep their text, and
// keys are later matched byte for byte. raw is JSON text ([]byte,
// json.RawMessage), fields already read, or a decoded value. A decoded
// value has lost duplicates and number text already: its float64 numbers
// are refused rather than guessed at.
func argObject(raw any) (fields, error) {
	var b []byte
	switch v := raw.(type) {
	case fields:
		return v, nil
	case nil:
		return fields{}, nil
	case json.RawMessage:
		b = v
	case []byte:
		b = v
	case map[string]any:
		m := make(fields, len(v))
		for k, x := range v {
			if _, ok := x.(float64); ok {
				// The number's text is gone; 30.000000000000001 and 30
				// are the same float64. Only a string is unambiguous.
				return nil, mandate.Errorf(mandate.EINVALID, "argument %s arrived as a number whose exact text was lost; send it as a string like \"30.00\"", safeName(k))
			}
			e, err := json.Marshal(x)
			if err != nil {
				return nil, mandate.Errorf(mandate.EINVALID, "arguments could not be read")
			}
			m[k] = e
		}
		return m, nil
	default:
		return nil, mandate.Errorf(mandate.EINVALID, "arguments must be a JSON object")
	}
	if !utf8.Valid(b) {
		return nil, mandate.Errorf(mandate.EINVALID, "arguments are not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
	}
	if tok == nil { // null: no arguments
		return fields{}, trailing(dec)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, mandate.Errorf(mandate.EINVALID, "arguments must be a JSON object")
	}
	m := fields{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
		}
		key, ok := tok.(string)
		if !ok {
			return nil, mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
		}
		if _, dup := m[key]; dup {
			// Parsers disagree on which copy wins; refuse rather than pick.
			return nil, mandate.Errorf(mandate.EINVALID, "argument %s appears more than once; send each argument once", safeName(key))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
		}
		m[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
	}
	return m, trailing(dec)
}

// trailing refuses anything after the arguments' one JSON value.
func trailing(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
	}
	return nil
}

// safeName quotes an argument name for a message, escaping what a person
// could not see, and cuts it short.
func safeName(k string) string {
	if len(k) > 64 {
		k = mandate.Truncate(k, 64)
	}
	return strconv.Quote(k)
}

// bind decodes a tool's arguments strictly into a typed struct: keys must
// be the schema's names byte for byte and appear once, values must have
// the declared JSON type, and the struct must validate. Every failure is an
// invalid error whose message tells the agent exactly what to fix.
func bind[A any](raw any, a *A, names []string) error {
	if err := decodeArgs(raw, a, names); err != nil {
		return err
	}
	if v, ok := any(a).(validator); ok {
		return v.validate()
	}
	return nil
}

// decodeArgs is bind without validate: the strict reading of names, types
// and duplicates only.
func decodeArgs[A any](raw any, a *A, names []string) error {
	m, err := argObject(raw)
	if err != nil {
		return err
	}
	for k := range m {
		if !slices.Contains(names, k) {
			sorted := slices.Sorted(slices.Values(names))
			return mandate.Errorf(mandate.EINVALID, "unknown argument %s; this tool takes %s", safeName(k), strings.Join(sorted, ", "))
		}
	}
	// Every key is now exactly one of the struct's names, so
	// encoding/json's folding has nothing left to fold.
	b, err := json.Marshal(m)
	if err != nil {
		return mandate.Errorf(mandate.EINVALID, "arguments are not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(a); err != nil {
		var te *json.UnmarshalTypeError
		var me *mandate.Error
		switch {
		case errors.As(err, &me):
			return me
		case errors.As(err, &te):
			return mandate.Errorf(mandate.EINVALID, "argument %s must be a %s, not %s", te.Field, jsonType(te.Type.Kind().String()), article(jsonType(te.Value)))
		default:
			return mandate.Errorf(mandate.EINVALID, "arguments could not be read")
		}
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "int", "int64", "float64":
		return "number"
	case "bool":
		return "boolean"
	}
	return kind
}

// article puts "a" or "an" before a JSON type name.
func article(name string) string {
	if strings.ContainsAny(name[:1], "aeiou") {
		return "an " + name
	}
	return "a " + name
}

// required checks that a string argument is present, not blank and short.
func required(name, v string, max int) error {
	if strings.TrimSpace(v) == "" {
		return mandate.Errorf(mandate.EINVALID, "argument %s is required", name)
	}
	if len(v) > max {
		return mandate.Errorf(mandate.EINVALID, "argument %s is %d bytes; the limit is %d", name, len(v), max)
	}
	return nil
}

// amountArg is an amount as the agent wrote it: a decimal string ("30.00")
// or the text of a JSON number (30, 30.5, 1e2). It becomes integer minor
// units only once the order's currency is known (parseAmount), and is then
// rewritten in the currency's canonical form ("30.00"), which is what is
// audited. A number is never read through float64: 30.000000000000001 is
// that text, and has too many decimals for any currency.
type amountArg string

func (a *amountArg) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // absent: validate says it is required
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = amountArg(s)
		return nil
	}
	if len(b) == 0 || !(b[0] == '-' || b[0] >= '0' && b[0] <= '9') {
		return mandate.Errorf(mandate.EINVALID, "argument amount must be a decimal string like \"30.00\"")
	}
	s, err := plainDecimal(string(b))
	if err != nil {
		return err
	}
	*a = amountArg(s)
	return nil
}

// amountInCurrency is implemented by arguments that hold an amount, which
// has a canonical form only in a currency: load rewrites the amount in the
// order's currency, so a retry is compared with what its first attempt
// recorded.
type amountInCurrency interface {
	// likeRecorded takes the amount's text from recorded arguments when it
	// is the same value, so a retry that sends 30 matches "30.00".
	likeRecorded(recorded json.RawMessage)
}

// plainDecimal writes the text of a JSON number without an exponent and
// without fractional zeros that carry no value (a number's value, unlike
// a string's text, is the same with or without them): "1.50e1" is "15",
// "30.000" is "30". It is exact: digits move, nothing is rounded.
func plainDecimal(n string) (string, error) {
	neg := strings.HasPrefix(n, "-")
	n = strings.TrimPrefix(n, "-")
	mant, expText, hasExp := strings.Cut(strings.ToLower(n), "e")
	exp := 0
	if hasExp {
		sign := 1
		switch {
		case strings.HasPrefix(expText, "-"):
			sign, expText = -1, expText[1:]
		case strings.HasPrefix(expText, "+"):
			expText = expText[1:]
		}
		if expText == "" || len(expText) > 3 || !mandate.Digits(expText) {
			return "", mandate.Errorf(mandate.EINVALID, "amount %s is not a decimal number like \"30.00\"", strconv.Quote(mandate.Truncate(n, 40)))
		}
		for _, c := range expText {
			exp = exp*10 + int(c-'0')
		}
		exp *= sign
	}
	whole, frac, _ := strings.Cut(mant, ".")
	if whole == "" || !mandate.Digits(whole) || !mandate.Digits(frac) {
		return "", mandate.Errorf(mandate.EINVALID, "argument amount must be a decimal string like \"30.00\"")
	}
	digits := whole + frac
	point := len(whole) + exp // position of the decimal point in digits
	if point > 40 {
		// Far beyond any amount, and too long to build.
		return "", mandate.Errorf(mandate.EINVALID, "amount %s is too large", strconv.Quote(mandate.Truncate(n, 40)))
	}
	if point < -40 && strings.Trim(digits, "0") != "" {
		return "", mandate.Errorf(mandate.EINVALID, "amount %s has more decimal places than any currency", strconv.Quote(mandate.Truncate(n, 40)))
	}
	if point < -40 {
		point = -40 // zero, however written
	}
	switch {
	case point <= 0:
		digits = strings.Repeat("0", -point+1) + digits
		point = 1
	case point > len(digits):
		digits += strings.Repeat("0", point-len(digits))
	}
	w, f := strings.TrimLeft(digits[:point], "0"), strings.TrimRight(digits[point:], "0")
	if w == "" {
		w = "0"
	}
	s := w
	if f != "" {
		s += "." + f
	}
	if neg {
		s = "-" + s
	}
	return s, nil
}

// canonical encodes v as JSON with object keys sorted, the form in which
// arguments are audited and digested.
func canonical(v any) json.RawMessage {
	if plainJSON(v) {
		// A map of plain values (the facts the rules test) encodes in its
		// canonical form at once: the round trip below would give the same
		// bytes, at three times the cost, inside the attempt's transaction.
		if b, err := json.Marshal(v); err == nil {
			return b
		}
		return json.RawMessage(`{}`)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	var m any
	if err := json.Unmarshal(b, &m); err != nil {
		return json.RawMessage(`{}`)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return out
}

// plainJSON reports whether v is a map of values that encoding/json
// writes exactly as it would after decoding them into any: strings of
// valid UTF-8, booleans, float64s, integers a float64 holds
// exactly, nil, and maps and slices of these.
func plainJSON(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if !utf8.ValidString(k) || !plainValue(x) {
				return false
			}
		}
		return true
	}
	return false
}

func plainValue(v any) bool {
	switch v := v.(type) {
	case nil, bool, float64:
		return true
	case string:
		return utf8.ValidString(v)
	case int:
		return v >= -1<<53 && v <= 1<<53
	case int64:
		return v >= -1<<53 && v <= 1<<53
	case map[string]any:
		return plainJSON(v)
	case []any:
		for _, x := range v {
			if !plainValue(x) {
				return false
			}
		}
		return true
	}
	return false
}

func argNames(props map[string]any) []string {
	names := make([]string, 0, len(props))
	for n := range props {
		names = append(names, n)
	}
	return names
}
