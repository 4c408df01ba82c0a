package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"github.com/mandatehq/mandate"
)

// maxText bounds free-text arguments (reasons, new values): longer text is
// refused before it reaches a rule, a log or the audit trail.
const maxText = 1000

// validator is implemented by argument structs that check themselves.
type validator interface{ validate() error }

// bind decodes a tool's arguments strictly into a typed struct: unknown
// arguments, wrong JSON types and failed validation are invalid errors whose
// messages tell the agent exactly what to fix.
func bind[A any](raw any, a *A, names []string) error {
	if raw == nil {
		raw = map[string]any{}
	}
	if _, ok := raw.(map[string]any); !ok {
		return mandate.Errorf(mandate.EINVALID, "arguments must be a JSON object")
	}
	b, err := json.Marshal(raw)
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
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.TrimPrefix(err.Error(), "json: unknown field ")
			sort.Strings(names)
			return mandate.Errorf(mandate.EINVALID, "unknown argument %s; this tool takes %s", name, strings.Join(names, ", "))
		default:
			return mandate.Errorf(mandate.EINVALID, "arguments could not be read: %v", err)
		}
	}
	if v, ok := any(a).(validator); ok {
		return v.validate()
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

// amountArg accepts an amount as a decimal string ("30.00") or a JSON
// number, and keeps it as text: it becomes integer minor units only once the
// order's currency is known. A number is read as its shortest decimal form,
// which is what the agent wrote.
type amountArg string

func (a *amountArg) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = amountArg(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return mandate.Errorf(mandate.EINVALID, "argument amount must be a decimal string like \"30.00\"")
	}
	*a = amountArg(n.String())
	return nil
}

// canonical encodes v as JSON with object keys sorted, the form in which
// arguments are audited and digested.
func canonical(v any) json.RawMessage {
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

func argNames(props map[string]any) []string {
	names := make([]string, 0, len(props))
	for n := range props {
		names = append(names, n)
	}
	return names
}
