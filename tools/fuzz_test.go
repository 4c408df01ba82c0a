package tools

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
)

// FuzzBindRefund feeds arbitrary JSON text to bind with refund_order's
// argument type, as a tools/call's raw arguments would arrive. It must never panic, and either refuse with
// an invalid error the agent can act on or produce arguments that validate
// and survive being audited and bound again unchanged.
func FuzzBindRefund(f *testing.F) {
	for _, s := range []string{
		`{"order_id":"ord_1001","amount":"30.00","reason":"Item arrived scratched"}`,
		`{"order_id":"ord_1001","amount":30.5,"reason":"x"}`,
		`{"order_id":"ord_1001","amount":1e400,"reason":"x"}`,
		`{"order_id":"ord_1001","amount":{"value":"30.00"},"reason":"x"}`,
		`{"order_id":7,"amount":"30.00","reason":"x"}`,
		`{"order_id":"ord_1001","amount":"30.00","reason":"x","currency":"EUR"}`,
		`{"order_id":"   ","amount":"30.00","reason":"x"}`,
		`{"order_id":"ord_1001","amount":null,"reason":null}`,
		`{}`, `null`, `[]`, `"ord_1001"`, `{"amount":"-5"}`,
		`{"order_id":"ord_1001","order_id":"ord_1002","amount":"1.00","reason":"x"}`,
		`{"order_id":"ord_1001","ORDER_ID":"ord_1002","amount":"1.00","reason":"x"}`,
		`{"order_id":"ord_1001","amount":3.05e1,"reason":"x"}`,
		`{"order_id":"ord_1001","amount":30.000000000000001,"reason":"x"}`,
		`{"order_id":"ord_1001","amount":" 100","reason":"x"}`,
		`{"order_id":"ord_1001","amount":"100 ","reason":"x"}`,
	} {
		f.Add([]byte(s))
	}
	names := argNames(refundOrder().(spec[refundArgs]).tool.InputSchema.Properties)
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return // mcp-go refuses the request before any tool runs
		}
		var a refundArgs
		err := bind(json.RawMessage(data), &a, names)
		if err != nil {
			var me *mandate.Error
			if !errors.As(err, &me) || me.Code != mandate.EINVALID || me.Message == "" {
				t.Fatalf("bind(%s) = %#v, want a *mandate.Error with code invalid", data, err)
			}
			return
		}
		if err := a.validate(); err != nil {
			t.Fatalf("bind(%s) accepted %+v, which does not validate: %v", data, a, err)
		}
		if s := string(a.Amount); s != strings.TrimSpace(s) {
			t.Fatalf("bind(%s) accepted the amount %q: money with spaces around it must be refused, not trimmed", data, s)
		}
		// What is audited is canonical(a); bound again it must be the same.
		var again map[string]any
		if err := json.Unmarshal(canonical(a), &again); err != nil {
			t.Fatalf("canonical(%+v) is not a JSON object: %v", a, err)
		}
		var b refundArgs
		if err := bind(again, &b, names); err != nil || b != a {
			t.Fatalf("rebinding the canonical form %s gave %+v, %v; want %+v", canonical(a), b, err, a)
		}
	})
}
