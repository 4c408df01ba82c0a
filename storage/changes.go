package storage

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/mandatehq/mandate"
)

// Changes is what one executed action changed in the system of record. It
// is stored as JSON in the audit column `changes` of the action's outcome
// record (Record.Changes), so the hash chain covers it; every other record
// has no changes (empty column, null in exports).
//
// The JSON, one object, keys always in this order:
//
//	{"tool":"update_account","customer_id":"cus_ada",
//	 "fields":[{"field":"email","before":"ada@example.com","after":"ada@new.example"}],
//	 "source":"read_before_call"}
//
//	{"tool":"refund_order","customer_id":"cus_ada","order_id":"ord_1001","refund_id":"re_...",
//	 "fields":[{"field":"refunded","before":{"minor":0,"currency":"USD"},"after":{"minor":3000,"currency":"USD"}},
//	           {"field":"refundable","before":{"minor":12000,"currency":"USD"},"after":{"minor":9000,"currency":"USD"}}],
//	 "source":"read_before_call"}
//
//	{"tool":"cancel_order","customer_id":"cus_ada","order_id":"ord_1004",
//	 "fields":[{"field":"status","before":"processing","after":"cancelled"}],
//	 "source":"read_before_call"}
//
// tool is the tool that acted. customer_id is the customer whose account or
// order changed (for an order, its customer as the system of record says);
// order_id and refund_id are set for order actions and refunds. Each entry
// of fields is one value that changed: field is the customer field
// (email, phone, shipping_address, name) for update_account, "status" for
// cancel_order, "refunded" and "refundable" for refund_order. before and
// after are JSON strings for text fields and status, and money objects
// {"minor":N,"currency":"USD"} (integer minor units, as mandate.Money) for
// refunded and refundable; either is null when it could not be read.
//
// source says where before came from: "read_before_call" is a read of the
// system of record made right before the call that acted (after any wait
// for a person's approval), and after is what the call returned (for a
// refund, a read of the order right after it); "reconciled" is an action
// whose outcome was recorded after a restart (tools.Recover): before is
// null, since nothing read it, and after is what the system of record
// showed then; "reported_by_system_of_record" (ChangesReported) is a
// refund whose before and after come from the refund's own answer. note says, in words, anything short of that (a value that
// could not be read).
//
// The customer field values are personal data: Record.Redacted masks
// before and after of every field that is not in NonPersonalChangeFields.
type Changes struct {
	Tool       string        `json:"tool"`
	CustomerID string        `json:"customer_id,omitempty"`
	OrderID    string        `json:"order_id,omitempty"`
	RefundID   string        `json:"refund_id,omitempty"`
	Fields     []FieldChange `json:"fields"`
	Source     string        `json:"source"`
	Note       string        `json:"note,omitempty"`
}

// Sources of a Changes' before values.
const (
	ChangesReadBeforeCall = "read_before_call"
	ChangesReconciled     = "reconciled"
	// ChangesReported is a refund whose system of record reported the
	// order as the refund left it, in the refund's own transaction
	// (backend.RefundReporter): after is that answer and before is after
	// less this refund, exact even when other changes raced it.
	ChangesReported = "reported_by_system_of_record"
)

// FieldChange is one value an action changed: before and after are JSON
// (a string, or a mandate.Money object), null when unknown.
type FieldChange struct {
	Field  string          `json:"field"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

// NonPersonalChangeFields are the changed fields whose values are not
// personal data: order status and amounts. Every other field's values are
// masked in redacted exports, so a field added later is masked until it is
// listed here.
var NonPersonalChangeFields = []string{"status", "refunded", "refundable"}

// TextValue is a text before or after value as JSON; "" is null (unknown).
func TextValue(s string, known bool) json.RawMessage {
	if !known {
		return json.RawMessage("null")
	}
	b, _ := json.Marshal(s)
	return b
}

// MoneyValue is a money before or after value as JSON.
func MoneyValue(m mandate.Money, known bool) json.RawMessage {
	if !known {
		return json.RawMessage("null")
	}
	b, _ := json.Marshal(m)
	return b
}

// ChangeText reads a text before or after value: ok is false when it is
// null or not text.
func ChangeText(v json.RawMessage) (s string, ok bool) {
	return s, string(v) != "null" && json.Unmarshal(v, &s) == nil
}

// ChangeMoney reads a money before or after value: ok is false when it is
// null or not money.
func ChangeMoney(v json.RawMessage) (m mandate.Money, ok bool) {
	return m, string(v) != "null" && json.Unmarshal(v, &m) == nil && m.Currency != ""
}

// ParseChanges reads a Record.Changes value; nil, nil when there is none.
func ParseChanges(b json.RawMessage) (*Changes, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	var c Changes
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Encode is c as stored in the changes column.
func (c *Changes) Encode() json.RawMessage {
	if c == nil {
		return nil
	}
	if c.Fields == nil {
		c.Fields = []FieldChange{}
	}
	b, _ := json.Marshal(c)
	return b
}

// personalChange reports whether a changed field's values are personal.
func personalChange(field string) bool { return !slices.Contains(NonPersonalChangeFields, field) }

// Summary is c in one line for people: `email "a@x" -> "b@y"`,
// `refunded 0.00 USD -> 30.00 USD`, `status processing -> cancelled`,
// with the refund id and note; "?" stands for an unknown value. Values are
// shown as stored: redact the record first for a summary without personal
// data.
func (c *Changes) Summary() string {
	if c == nil {
		return ""
	}
	var parts []string
	for _, f := range c.Fields {
		parts = append(parts, f.Field+" "+changeValue(f.Before, !personalChange(f.Field))+" -> "+changeValue(f.After, !personalChange(f.Field)))
	}
	s := strings.Join(parts, ", ")
	if c.RefundID != "" {
		s += " (refund " + c.RefundID + ")"
	}
	if c.Source == ChangesReconciled {
		s += " [reconciled after a restart: before unknown]"
	} else if c.Note != "" {
		s += " [" + c.Note + "]"
	}
	return s
}

// changeValue shows one before or after value: money as "30.00 USD",
// text quoted (bare for a status), null as "?".
func changeValue(v json.RawMessage, bare bool) string {
	if m, ok := ChangeMoney(v); ok {
		return m.String() + " " + m.Currency
	}
	if s, ok := ChangeText(v); ok {
		if bare {
			return s
		}
		return strconv.Quote(s)
	}
	if len(v) == 0 || string(v) == "null" {
		return "?"
	}
	return string(v)
}

// ChangesSummary is the Summary of a Record.Changes value; "" when there
// is none or it cannot be read.
func ChangesSummary(b json.RawMessage) string {
	c, err := ParseChanges(b)
	if err != nil {
		return "(unreadable changes)"
	}
	return c.Summary()
}
