package tools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// callJSON sends arguments as the wire carries them: JSON text decoded by
// mcp-go, so numbers arrive as float64 exactly as from a real client.
func (h *harness) callJSON(ctx context.Context, name, args string) *mcp.CallToolResult {
	h.t.Helper()
	var params mcp.CallToolParams
	if err := json.Unmarshal([]byte(`{"name":"`+name+`","arguments":`+args+`}`), &params); err != nil {
		h.t.Fatalf("test arguments %s: %v", args, err)
	}
	res, err := h.tools[name].Handler(ctx, mcp.CallToolRequest{Params: params})
	if err != nil {
		h.t.Fatalf("%s: handler returned a Go error: %v", name, err)
	}
	return res
}

// huge is a 1 MB reason: far past maxText, and past what a log line or an
// audit record should ever hold.
var huge = strings.Repeat("x", 1<<20)

// TestBindRefusesBadArguments: arguments of the wrong type, unknown,
// missing, too long or not a valid amount are refused as invalid with a
// message that says what to fix, before any rule, audit record or backend
// call.
func TestBindRefusesBadArguments(t *testing.T) {
	t.Parallel()
	refund := func(amount string) string {
		return `{"order_id":"ord_1001","amount":` + amount + `,"reason":"Item arrived scratched"}`
	}
	tests := []struct {
		name, tool, args string
		want             string // the message, exactly
	}{
		// Wrong JSON types.
		{"id as number", "get_order", `{"order_id":1001}`, "argument order_id must be a string, not a number"},
		{"id as bool", "get_customer", `{"customer_id":true}`, "argument customer_id must be a string, not a boolean"},
		{"reason as array", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":["late"]}`, "argument reason must be a string, not an array"},
		{"field as object", "update_account", `{"customer_id":"cus_ada","field":{"name":"phone"},"value":"+44","reason":"x"}`, "argument field must be a string, not an object"},
		{"amount as bool", "refund_order", refund(`true`), `argument amount must be a decimal string like "30.00"`},
		{"amount as object", "refund_order", refund(`{"value":"30.00"}`), `argument amount must be a decimal string like "30.00"`},
		{"amount as array", "refund_order", refund(`["30.00"]`), `argument amount must be a decimal string like "30.00"`},
		{"arguments as array", "get_order", `["ord_1001"]`, "arguments must be a JSON object"},
		{"arguments as string", "refund_order", `"ord_1001 30.00"`, "arguments must be a JSON object"},
		{"key as number", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":"x","idempotency_key":7}`, "argument idempotency_key must be a string"},

		// Unknown arguments: an identity in the arguments is no identity.
		{"agent as argument", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":"x","agent":"senior-bot"}`,
			`unknown argument "agent"; this tool takes amount, idempotency_key, order_id, reason`},
		{"misspelt argument", "get_order", `{"order":"ord_1001"}`, `unknown argument "order"; this tool takes order_id`},
		{"key on a read", "get_order", `{"order_id":"ord_1001","idempotency_key":"k1"}`, `unknown argument "idempotency_key"; this tool takes order_id`},

		// Keys are matched byte for byte and once: what encoding/json would
		// fold ("cuſtomer_id" with U+017F is customer_id to it) or pick
		// between (the last duplicate) is refused, so no client, gateway or
		// log can read the call differently from the guard.
		{"folded key", "update_account", `{"customer_id":"cus_ada","cuſtomer_id":"cus_grace","field":"phone","value":"+441234000000","reason":"x"}`,
			`unknown argument "cuſtomer_id"; this tool takes customer_id, field, idempotency_key, reason, value`},
		{"upper-case key", "get_order", `{"ORDER_ID":"ord_1001"}`, `unknown argument "ORDER_ID"; this tool takes order_id`},
		{"kelvin sign in key", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":"x","idempotency_\u212aey":"k"}`,
			`unknown argument "idempotency_Key"; this tool takes amount, idempotency_key, order_id, reason`},
		{"hidden character in key", "get_order", `{"order_id\u200b":"ord_1001"}`, `unknown argument "order_id\u200b"; this tool takes order_id`},
		{"duplicate key", "update_account", `{"customer_id":"cus_ada","customer_id":"cus_grace","field":"phone","value":"+441234000000","reason":"x"}`,
			`argument "customer_id" appears more than once; send each argument once`},
		{"duplicate escaped key", "get_order", `{"order_id":"ord_1001","order\u005fid":"ord_1002"}`, `argument "order_id" appears more than once; send each argument once`},
		{"duplicate key", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":"x","idempotency_key":"a","idempotency_key":"b"}`,
			`argument "idempotency_key" appears more than once; send each argument once`},
		{"invalid UTF-8", "get_order", "{\"order_id\":\"ord_1001\xff\"}", "arguments are not valid UTF-8"},

		// update_account values are judged by field before anything is
		// decided; messages never repeat the value.
		{"email without @", "update_account", `{"customer_id":"cus_ada","field":"email","value":"not-an-email","reason":"x"}`,
			"value is not an email address like name@example.com (one address, no display name, no spaces)"},
		{"email with markup", "update_account", `{"customer_id":"cus_ada","field":"email","value":"<script>@example.com","reason":"x"}`,
			"value is not an email address like name@example.com (one address, no display name, no spaces)"},
		{"two emails", "update_account", `{"customer_id":"cus_ada","field":"email","value":"a@example.com, b@example.com","reason":"x"}`,
			"value is not an email address like name@example.com (one address, no display name, no spaces)"},
		{"phone with spaces", "update_account", `{"customer_id":"cus_ada","field":"phone","value":"+44 1234 000000","reason":"x"}`,
			`value is not a phone number in E.164 form: "+", the country code and the number, digits only, such as +441234567890`},
		{"phone too long", "update_account", `{"customer_id":"cus_ada","field":"phone","value":"+4412340000000000","reason":"x"}`,
			`value is not a phone number in E.164 form: "+", the country code and the number, digits only, such as +441234567890`},
		{"name with bidi override", "update_account", `{"customer_id":"cus_ada","field":"name","value":"Ada \u202eecalevoL","reason":"x"}`,
			"value holds a control or invisible character; send the name as plain text on one line"},
		{"address on two lines", "update_account", `{"customer_id":"cus_ada","field":"shipping_address","value":"1 New St\nLondon","reason":"x"}`,
			"value holds a control or invisible character; send the shipping address as plain text on one line"},
		{"name with markup", "update_account", `{"customer_id":"cus_ada","field":"name","value":"<b>Ada</b>","reason":"x"}`,
			`value holds '<', which a name may not contain; use letters, digits, spaces and ' ’ - . ,`},
		{"name too long", "update_account", `{"customer_id":"cus_ada","field":"name","value":"` + strings.Repeat("a", 101) + `","reason":"x"}`,
			"value is 101 characters long; a name may have at most 100"},
		{"name of digits", "update_account", `{"customer_id":"cus_ada","field":"name","value":"12345","reason":"x"}`, "value has no letters, so it is not a name"},
		{"missing update reason", "update_account", `{"customer_id":"cus_ada","field":"phone","value":"+441234000000"}`, "argument reason is required"},

		// Missing and blank arguments.
		{"no arguments", "refund_order", `{}`, "argument order_id is required"},
		{"null arguments", "get_customer", `null`, "argument customer_id is required"},
		{"null id", "get_order", `{"order_id":null}`, "argument order_id is required"},
		{"missing amount", "refund_order", `{"order_id":"ord_1001","reason":"x"}`, "argument amount is required"},
		{"missing reason", "refund_order", `{"order_id":"ord_1001","amount":"1.00"}`, "argument reason is required"},
		{"blank reason", "cancel_order", `{"order_id":"ord_1004","reason":"  \t "}`, "argument reason is required"},
		{"missing value", "update_account", `{"customer_id":"cus_ada","field":"phone","reason":"x"}`, "argument value is required"},
		{"blank key", "cancel_order", `{"order_id":"ord_1004","reason":"x","idempotency_key":" "}`, "argument idempotency_key must be 1 to 200 characters"},

		// Too long, and out of the enum.
		{"1 MB reason", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":"` + huge + `"}`, "argument reason is 1048576 bytes; the limit is 1000"},
		{"1 MB value", "update_account", `{"customer_id":"cus_ada","field":"name","value":"` + huge + `","reason":"x"}`, "argument value is 1048576 bytes; the limit is 500"},
		{"long order id", "get_order", `{"order_id":"` + strings.Repeat("o", 101) + `"}`, "argument order_id is 101 bytes; the limit is 100"},
		{"long amount", "refund_order", refund(`"` + strings.Repeat("1", 41) + `"`), "argument amount is 41 bytes; the limit is 40"},
		{"unknown field", "update_account", `{"customer_id":"cus_ada","field":"password","value":"hunter2","reason":"x"}`, "field must be one of email, phone, shipping_address, name"},

		// Amounts judged against the order's currency (ord_1001 is USD,
		// ord_2001 is JPY).
		{"three decimals on USD", "refund_order", refund(`"1.005"`), `amount "1.005" has more than 2 decimal places for USD`},
		{"three decimals as number", "refund_order", refund(`1.005`), `amount "1.005" has more than 2 decimal places for USD`},
		{"decimals on JPY", "refund_order", `{"order_id":"ord_2001","amount":"1.5","reason":"x"}`, `amount "1.5" has decimals, but JPY has no minor unit`},
		{"zero", "refund_order", refund(`"0"`), "amount must be greater than zero"},
		{"zero with decimals", "refund_order", refund(`"0.00"`), "amount must be greater than zero"},
		{"zero as number", "refund_order", refund(`0`), "amount must be greater than zero"},
		{"negative", "refund_order", refund(`"-5"`), "amount must be greater than zero"},
		{"negative as number", "refund_order", refund(`-5`), "amount must be greater than zero"},
		{"NaN", "refund_order", refund(`"NaN"`), `amount "NaN" is not a decimal number like "30.00"`},
		{"exponent", "refund_order", refund(`"1e5"`), `amount "1e5" is not a decimal number like "30.00"`},
		{"huge number", "refund_order", refund(`1e21`), `amount "1000000000000000000000" is too large`},
		{"tiny exponent", "refund_order", refund(`1e-999`), `amount "1e-999" has more decimal places than any currency`},
		{"exponent too long", "refund_order", refund(`1e0000000005`), `amount "1e0000000005" is not a decimal number like "30.00"`},
		{"float noise", "refund_order", refund(`30.000000000000001`), `amount "30.000000000000001" has more than 2 decimal places for USD`},
		{"amount null", "refund_order", refund(`null`), "argument amount is required"},
		{"Infinity", "refund_order", refund(`"Infinity"`), `amount "Infinity" is not a decimal number like "30.00"`},
		{"plus sign", "refund_order", refund(`"+5"`), `amount "+5" is not a decimal number like "30.00"`},
		{"no whole part", "refund_order", refund(`".5"`), `amount ".5" is not a decimal number like "30.00"`},
		{"trailing dot", "refund_order", refund(`"5."`), `amount "5." is not a decimal number like "30.00"`},
		{"thousands separator", "refund_order", refund(`"1,000.00"`), `amount "1,000.00" is not a decimal number like "30.00"`},
		{"currency in amount", "refund_order", refund(`"30.00 USD"`), `amount "30.00 USD" is not a decimal number like "30.00"`},
		// Money is refused, never trimmed: " 100" is not quietly 100.
		{"leading space", "refund_order", refund(`" 100"`), `amount " 100" has spaces at its start or end; send the decimal number alone, like "30.00"`},
		{"trailing space", "refund_order", refund(`"100 "`), `amount "100 " has spaces at its start or end; send the decimal number alone, like "30.00"`},
		{"trailing newline", "refund_order", refund(`"30.00\n"`), `amount "30.00\n" has spaces at its start or end; send the decimal number alone, like "30.00"`},
		{"leading tab", "refund_order", refund(`"\t30.00"`), `amount "\t30.00" has spaces at its start or end; send the decimal number alone, like "30.00"`},
		{"no-break space", "refund_order", refund(`"30.00\u00a0"`), `amount "30.00\u00a0" has spaces at its start or end; send the decimal number alone, like "30.00"`},
		{"space inside", "refund_order", refund(`"30 .00"`), `amount "30 .00" is not a decimal number like "30.00"`},
		{"too large", "refund_order", refund(`"99999999999999999"`), `amount "99999999999999999" is too large`},
	}
	// One server for every case: nothing may change between them, and a
	// case that wrote anything fails on its own count.
	h := newHarness(t, shippedPolicy(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t // report failures against this case
			res := h.callJSON(tools.WithAgent(context.Background(), "senior-bot"), tt.tool, tt.args)
			got := decode(t, res)
			if !res.IsError || got.Error != mandate.EINVALID {
				t.Fatalf("isError=%v error=%q (%s), want invalid", res.IsError, got.Error, got.Message)
			}
			if got.Message != tt.want {
				t.Fatalf("message %q, want %q", got.Message, tt.want)
			}
			if want, _ := json.Marshal(tools.ErrorResult{Error: mandate.EINVALID, Message: tt.want}); text(res) != string(want) {
				t.Fatalf("text %q, want %q", text(res), want)
			}
			if w := h.be.Writes(); len(w) != 0 {
				t.Fatalf("backend writes %v for invalid arguments", w)
			}
			// Bad input is answered, not decided: nothing reaches the rules
			// or the audit trail, so a 1 MB reason is stored nowhere.
			if recs := h.records(); len(recs) != 0 {
				t.Fatalf("%d audit records for invalid arguments, want none", len(recs))
			}
		})
	}
}

// TestBindAcceptsAmounts: an amount is the agent's decimal text, or the
// exact text of a JSON number (never a float64), in the order's currency;
// what reaches the backend is exact integer minor units, and what is
// audited is the currency's canonical form ("30.00").
func TestBindAcceptsAmounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, order, amount string // amount as JSON
		wantText            string // as audited
		want                mandate.Money
	}{
		{"number with one decimal", "ord_1001", `30.5`, "30.50", usd(3050)},
		{"string with one decimal", "ord_1001", `"30.5"`, "30.50", usd(3050)},
		{"whole number", "ord_1001", `30`, "30.00", usd(3000)},
		{"whole string", "ord_1001", `"30"`, "30.00", usd(3000)},
		{"number with zeros past the cents", "ord_1001", `30.000`, "30.00", usd(3000)},
		{"number with an exponent", "ord_1001", `3.05e1`, "30.50", usd(3050)},
		{"number with a negative exponent", "ord_1001", `3050e-2`, "30.50", usd(3050)},
		{"number that is no exact float", "ord_1001", `19.99`, "19.99", usd(1999)},
		{"a cent", "ord_1001", `"0.01"`, "0.01", usd(1)},
		{"a cent as a number", "ord_1001", `0.01`, "0.01", usd(1)},
		{"the whole order", "ord_1001", `"120.00"`, "120.00", usd(12000)},
		{"leading zeros", "ord_1001", `"007.50"`, "7.50", usd(750)},
		{"yen", "ord_2001", `"15"`, "15", mandate.Money{Minor: 15, Currency: "JPY"}},
		{"yen as a number", "ord_2001", `15`, "15", mandate.Money{Minor: 15, Currency: "JPY"}},
		{"euro", "ord_1006", `"12.34"`, "12.34", eur(1234)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
			res := h.callJSON(tools.WithAgent(context.Background(), "tester"), "refund_order",
				fmt.Sprintf(`{"order_id":%q,"amount":%s,"reason":"Item arrived scratched"}`, tt.order, tt.amount))
			got := decode(t, res)
			if res.IsError || got.Status != storage.StatusExecuted {
				t.Fatalf("isError=%v %+v, want executed", res.IsError, got)
			}
			if len(h.be.refunds) != 1 || h.be.refunds[0].Amount != tt.want {
				t.Fatalf("refunds %+v, want one of %+v", h.be.refunds, tt.want)
			}
			recs := readRecords(t, h.db, storage.Filter{ActionID: got.ActionID})
			var args struct {
				Amount string `json:"amount"`
			}
			if err := json.Unmarshal(recs[0].Args, &args); err != nil {
				t.Fatal(err)
			}
			if args.Amount != tt.wantText {
				t.Fatalf("audited amount %q, want %q", args.Amount, tt.wantText)
			}
		})
	}
}

// TestBindNumberIsItsValue: a JSON number written with an exponent is the
// number it names (1e5 is 100000), which reaches the rules like any other
// amount; the shipped policy refuses it as more than the order has left.
func TestBindNumberIsItsValue(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shippedPolicy(t), nil)
	res := h.callJSON(tools.WithAgent(context.Background(), "senior-bot"), "refund_order",
		`{"order_id":"ord_1001","amount":1e5,"reason":"x"}`)
	got := decode(t, res)
	if got.Decision != policy.Deny || !strings.Contains(got.Rule, "amount > order_refundable") {
		t.Fatalf("decision %q by %q, want a deny by the refundable guardrail", got.Decision, got.Rule)
	}
	if !strings.Contains(got.Message, "refund of 100000.00 USD") {
		t.Fatalf("message %q, want it to name 100000.00 USD", got.Message)
	}
	checkNoWrites(t, "refund_order", h.be)
}

// TestBindWithoutRawText: a caller that hands the guard decoded arguments
// (no JSON text, as a Go program might) cannot have an amount's float64
// guessed at: it is refused, and a string amount still works.
func TestBindWithoutRawText(t *testing.T) {
	t.Parallel()
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	ctx := tools.WithAgent(context.Background(), "tester")
	got := decode(t, h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1001", "amount": 30.000000000000001, "reason": "x"}))
	if got.Error != mandate.EINVALID || got.Message != `argument "amount" arrived as a number whose exact text was lost; send it as a string like "30.00"` {
		t.Fatalf("float64 amount: %+v, want invalid", got)
	}
	checkNoWrites(t, "refund_order", h.be)
	if got := decode(t, h.call(ctx, "refund_order", map[string]any{"order_id": "ord_1001", "amount": json.Number("30"), "reason": "x"})); got.Status != storage.StatusExecuted {
		t.Fatalf("json.Number amount: %+v, want executed", got)
	}
}

// TestRetryWithNumberAmountReplays: an amount audited in canonical form
// ("30.00") still matches a retry that sends it as the number 30 with the
// same idempotency key: the retry gets the first result, nothing twice.
func TestRetryWithNumberAmountReplays(t *testing.T) {
	t.Parallel()
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	ctx := tools.WithAgent(context.Background(), "tester")
	first := decode(t, h.callJSON(ctx, "refund_order", `{"order_id":"ord_1001","amount":30,"reason":"x","idempotency_key":"k1"}`))
	again := decode(t, h.callJSON(ctx, "refund_order", `{"order_id":"ord_1001","amount":"30.0","reason":"x","idempotency_key":"k1"}`))
	if first.ActionID == "" || again.ActionID != first.ActionID || len(h.be.Writes()) != 1 {
		t.Fatalf("first %+v, retry %+v, writes %v: want one refund and the retry answered from it", first, again, h.be.Writes())
	}
	other := decode(t, h.callJSON(ctx, "refund_order", `{"order_id":"ord_1001","amount":31,"reason":"x","idempotency_key":"k1"}`))
	if other.Error != mandate.EINVALID || !strings.Contains(other.Message, "already used for a different action") {
		t.Fatalf("same key, other amount: %+v, want invalid", other)
	}
}

// TestNotFoundAsDocumented: an action on an unknown id answers with JSON
// text {"error":"not_found","message":…} (plus the audited refusal's
// action_id and decision), and the audit record and the action say
// not_found too.
func TestNotFoundAsDocumented(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shippedPolicy(t), nil)
	ctx := tools.WithAgent(context.Background(), "senior-bot")
	for _, c := range []struct {
		tool string
		args map[string]any
		id   string
	}{
		{"refund_order", map[string]any{"order_id": "ord_9999", "amount": "1.00", "reason": "x"}, "ord_9999"},
		{"cancel_order", map[string]any{"order_id": "ord_9999", "reason": "x"}, "ord_9999"},
		{"update_account", map[string]any{"customer_id": "cus_nobody", "field": "phone", "value": "+441234000000", "reason": "x"}, "cus_nobody"},
	} {
		res := h.call(ctx, c.tool, c.args)
		var body struct {
			Error    string `json:"error"`
			Message  string `json:"message"`
			ActionID string `json:"action_id"`
			Decision string `json:"decision"`
		}
		if err := json.Unmarshal([]byte(text(res)), &body); err != nil {
			t.Fatalf("%s: text %q is not JSON: %v", c.tool, text(res), err)
		}
		if !res.IsError || body.Error != mandate.ENOTFOUND || !strings.Contains(body.Message, c.id) || body.Decision != policy.Deny {
			t.Fatalf("%s: isError=%v %+v, want not_found naming %s", c.tool, res.IsError, body, c.id)
		}
		recs := readRecords(t, h.db, storage.Filter{ActionID: body.ActionID})
		if len(recs) != 1 || recs[0].Error != mandate.ENOTFOUND || recs[0].Decision != policy.Deny {
			t.Fatalf("%s: audit %+v, want one deny with error not_found", c.tool, recs)
		}
		act, err := h.db.Action(context.Background(), body.ActionID)
		if err != nil || act.Error != mandate.ENOTFOUND {
			t.Fatalf("%s: action %+v, %v: want error not_found", c.tool, act, err)
		}
		checkNoWrites(t, c.tool, h.be)
	}
}
