package tools_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

// currencyOrders are orders in six currencies, with 0 (JPY), 2 and 3
// (KWD, BHD) decimal places: ord_usd, ord_usd2 and so on, each of its own
// old customer so that the shipped three-refunds-per-customer rule does not
// interfere.
func currencyOrders() []byte {
	var data struct {
		Customers []map[string]string `json:"customers"`
		Orders    []map[string]string `json:"orders"`
	}
	totals := map[string]string{"USD": "1000.00", "EUR": "1000.00", "GBP": "1000.00", "JPY": "150000", "KWD": "300.000", "BHD": "300.000"}
	for cur, total := range totals {
		for _, suffix := range []string{"", "2"} {
			id := strings.ToLower(cur) + suffix
			data.Customers = append(data.Customers, map[string]string{"id": "cus_" + id, "name": "C " + id, "email": id + "@example.com", "created_at": "2020-01-01T00:00:00Z"})
			data.Orders = append(data.Orders, map[string]string{"id": "ord_" + id, "customer_id": "cus_" + id, "status": "delivered", "currency": cur, "total": total, "created_at": "2026-01-01T00:00:00Z"})
		}
	}
	raw, _ := json.Marshal(data)
	return raw
}

// currencyFixture is a real gateway database and a real embedded store
// holding currencyOrders, under the shipped policy and rates t (nil: the
// shipped rates).
func currencyFixture(t *testing.T, rt *rates.Table) *tools.Deps {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := store.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Import(ctx, currencyOrders()); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if rt == nil {
		rt = rates.Default()
	}
	// As a server does before deciding: its policy and rates are the live ones.
	if err := db.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, &storage.RatesLoad{Version: rt.Version, Base: rt.Base, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	return &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Backend: backend.Backend{Payments: st, Orders: st, Customers: st},
		Logger: slog.New(slog.DiscardHandler), Rates: rates.NewLive(rt)}
}

func refundAs(t *testing.T, d *tools.Deps, agent, order, amount string) *tools.ActionResult {
	t.Helper()
	res, err := handler(t, d, "refund_order")(tools.WithAgent(context.Background(), agent), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
		Arguments: map[string]any{"order_id": order, "amount": amount, "reason": "currency test"}}})
	if err != nil {
		t.Fatal(err)
	}
	out, ok := res.StructuredContent.(*tools.ActionResult)
	if !ok {
		t.Fatalf("refund %s %s: unexpected result %+v", amount, order, res.StructuredContent)
	}
	return out
}

// attemptAttrs returns the facts recorded with action id's attempt.
func attemptAttrs(t *testing.T, d *tools.Deps, id string) (map[string]any, *storage.Record) {
	t.Helper()
	var rec *storage.Record
	if err := d.DB.Records(context.Background(), storage.Filter{ActionID: id}, func(r *storage.Record) error {
		if r.Phase == storage.PhaseAttempt {
			rec = r
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		t.Fatalf("no attempt recorded for %s", id)
	}
	attrs := map[string]any{}
	if len(rec.Attrs) > 0 {
		if err := json.Unmarshal(rec.Attrs, &attrs); err != nil {
			t.Fatal(err)
		}
	}
	return attrs, rec
}

// TestSixCurrencySpreeStoppedAtBaseLimit: one support agent refunds about
// 45 USD worth at a time, alternating USD, EUR, GBP, JPY, KWD and BHD.
// Each is a small refund, but the shipped 500.00-in-24-h limit counts them
// all in the base currency, so the twelfth (the total would pass 500.00)
// waits for a person. Counted per currency, all twelve went through.
func TestSixCurrencySpreeStoppedAtBaseLimit(t *testing.T) {
	d := currencyFixture(t, nil)
	round := []struct {
		order, amount string
		baseMinor     int64 // in USD cents, rounded up
	}{
		{"ord_usd", "45.00", 4500},
		{"ord_eur", "41.00", 4446},  // 44.4522
		{"ord_gbp", "35.00", 4428},  // 44.275
		{"ord_jpy", "6800", 4488},   // 44.88
		{"ord_kwd", "13.800", 4492}, // 44.919
		{"ord_bhd", "16.900", 4483}, // 44.82725
	}
	var counted int64
	for i := range 12 {
		r := round[i%len(round)]
		order := r.order
		if i >= len(round) {
			order += "2"
		}
		out := refundAs(t, d, "demo-agent", order, r.amount)
		attrs, _ := attemptAttrs(t, d, out.ActionID)
		if got, want := attrs[policy.AttrAgentRefunded24h], float64(counted)/100; got != want {
			t.Fatalf("refund %d (%s %s): agent_refunded_24h = %v, want %v", i+1, r.amount, r.order, got, want)
		}
		if got, want := attrs[policy.AttrAmountBase], float64(r.baseMinor)/100; got != want {
			t.Fatalf("refund %d (%s %s): amount_base = %v, want %v", i+1, r.amount, r.order, got, want)
		}
		if attrs[policy.FactBaseCurrency] != "USD" || attrs[policy.FactRatesVersion] != rates.Default().Version || attrs[policy.FactRate] == "" {
			t.Fatalf("refund %d: the rate used is not recorded: %v", i+1, attrs)
		}
		want := policy.Allow
		if i == 11 {
			want = policy.RequireApproval
		}
		if out.Decision != want {
			t.Fatalf("refund %d (%s %s, %d cents counted before): %s by %s, want %s", i+1, r.amount, r.order, counted, out.Decision, out.Rule, want)
		}
		if want == policy.RequireApproval && !strings.Contains(out.Rule, "agent_refunded_24h + amount_base > 500.00") {
			t.Fatalf("refund %d was stopped by %s, not the 24 h limit", i+1, out.Rule)
		}
		if out.Decision == policy.Allow {
			counted += r.baseMinor
		}
	}
	if counted != 49191 {
		t.Fatalf("allowed %d USD cents, want 49191", counted)
	}
}

// TestKWDRefundIsNotASmallRefund: 50.000 KWD is about 163 USD, so the
// shipped small-refund rule (50.00 in the base currency) does not allow it.
func TestKWDRefundIsNotASmallRefund(t *testing.T) {
	d := currencyFixture(t, nil)
	out := refundAs(t, d, "demo-agent", "ord_kwd", "50.000")
	if out.Decision != policy.RequireApproval || !strings.Contains(out.Rule, "amount_base > 50.00 && amount_base <= 200.00") {
		t.Fatalf("50.000 KWD: %s by %s, want require_approval by the 50.00-200.00 base rule", out.Decision, out.Rule)
	}
	attrs, _ := attemptAttrs(t, d, out.ActionID)
	if attrs[policy.AttrAmount] != 50.0 || attrs[policy.AttrAmountBase] != 162.75 || attrs[policy.FactRate] != "3.2550" {
		t.Fatalf("recorded facts %v, want amount 50, amount_base 162.75, rate 3.2550", attrs)
	}
	// Approved, it counts against the agent's window in the base currency.
	act, err := tools.Approve(context.Background(), d, out.ActionID, "alice", "checked")
	if err != nil || act.Status != storage.StatusExecuted {
		t.Fatalf("approve: %v %+v", err, act)
	}
	u, err := d.DB.Usage(context.Background(), &storage.Action{Agent: "demo-agent", Tool: "refund_order", Currency: "USD"})
	if err != nil || u.AgentRefundedMinor24h != 16275 || u.AgentRefunds24h != 1 {
		t.Fatalf("usage after the approved KWD refund: %+v (%v), want 16275 USD cents in 1 refund", u, err)
	}
}

// TestRefundWithoutRateIsRefusedAndAudited: with rates that omit KWD, a
// KWD refund or cancellation is refused, the refusal is in the audit trail
// with its reason, and the store is untouched.
func TestRefundWithoutRateIsRefusedAndAudited(t *testing.T) {
	rt, err := rates.Parse("rates.csv", []byte("base, USD\nEUR, 1.0842\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := currencyFixture(t, rt)
	out := refundAs(t, d, "demo-agent", "ord_kwd", "1.000")
	if out.Decision != policy.Deny || out.Status != storage.StatusDenied {
		t.Fatalf("refund in KWD without a rate: %s (%s), want deny", out.Decision, out.Status)
	}
	if !strings.Contains(out.Message, "KWD has no exchange rate to USD") {
		t.Fatalf("the agent is not told why: %q", out.Message)
	}
	_, rec := attemptAttrs(t, d, out.ActionID)
	if rec.Decision != policy.Deny || !strings.Contains(rec.Rule, "KWD has no exchange rate to USD") {
		t.Fatalf("audit record: %s by %q, want a deny naming the missing rate", rec.Decision, rec.Rule)
	}
	o, err := d.Backend.Orders.Order(context.Background(), "ord_kwd")
	if err != nil {
		t.Fatal(err)
	}
	if o.Refunded.Minor != 0 {
		t.Fatalf("the store refunded %s KWD", o.Refunded)
	}
	res, err := handler(t, d, "cancel_order")(tools.WithAgent(context.Background(), "demo-agent"), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "cancel_order",
		Arguments: map[string]any{"order_id": "ord_kwd", "reason": "currency test"}}})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := res.StructuredContent.(*tools.ActionResult); !ok || c.Decision != policy.Deny {
		t.Fatalf("cancel in KWD without a rate: %+v, want deny", res.StructuredContent)
	}
	// A rated currency still works.
	if out := refundAs(t, d, "demo-agent", "ord_eur", "10.00"); out.Decision != policy.Allow {
		t.Fatalf("EUR refund: %s by %s, want allow", out.Decision, out.Rule)
	}
}

// TestRatesSwapChangesTheNextDecision: new rates recorded as live and
// swapped into the live holder (as the watcher does) decide the next call;
// what was counted stays as it was counted. Between the two (recorded by
// the other processes, not yet here), a refund is refused.
func TestRatesSwapChangesTheNextDecision(t *testing.T) {
	d := currencyFixture(t, nil)
	if out := refundAs(t, d, "demo-agent", "ord_eur", "45.00"); out.Decision != policy.Allow { // 48.79 USD
		t.Fatalf("45.00 EUR at 1.0842: %s, want allow", out.Decision)
	}
	data, err := rates.Set("rates.csv", mandate.DefaultRates, "EUR", "1.20")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := rates.Parse("rates.csv", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DB.RecordRates(context.Background(), &storage.RatesLoad{Version: rt.Version, Base: rt.Base, Command: "serve reload"}); err != nil {
		t.Fatal(err)
	}
	if out := refundAs(t, d, "demo-agent", "ord_eur", "45.00"); out.Decision != policy.Deny || !strings.Contains(out.Rule, tools.StaleRatesReason) {
		t.Fatalf("45.00 EUR with the old rates after the new ones were recorded: %s by %s, want refused as not live", out.Decision, out.Rule)
	}
	d.Rates.Swap(rt)
	out := refundAs(t, d, "demo-agent", "ord_eur", "45.00") // 54.00 USD
	if out.Decision != policy.RequireApproval {
		t.Fatalf("45.00 EUR at 1.20: %s by %s, want require_approval", out.Decision, out.Rule)
	}
	attrs, _ := attemptAttrs(t, d, out.ActionID)
	if attrs[policy.AttrAgentRefunded24h] != 48.79 || attrs[policy.FactRatesVersion] != rt.Version || attrs[policy.FactRate] != "1.20" {
		t.Fatalf("recorded %v, want 48.79 counted before, the new rate and version", attrs)
	}
}
