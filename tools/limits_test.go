package tools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// limitFixture opens two gateway handles and two store handles on the same
// files, like two `mandate serve` processes, with the shipped policy and
// n customers who each have one old account and one 100.00 USD order.
func limitFixture(t *testing.T, n int) (dir string, deps [2]*tools.Deps) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	var data struct {
		Customers []map[string]string `json:"customers"`
		Orders    []map[string]string `json:"orders"`
	}
	for i := range n {
		c := fmt.Sprintf("cus_l%03d", i)
		data.Customers = append(data.Customers, map[string]string{"id": c, "name": "L " + c, "email": c + "@example.com", "created_at": "2020-01-01T00:00:00Z"})
		data.Orders = append(data.Orders, map[string]string{"id": fmt.Sprintf("ord_l%03d", i), "customer_id": c, "status": "delivered", "currency": "USD", "total": "100.00", "created_at": "2026-01-01T00:00:00Z"})
	}
	raw, _ := json.Marshal(data)
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(pol)
	for i := range deps {
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
		if i == 0 {
			if _, err := st.Import(ctx, raw); err != nil {
				t.Fatal(err)
			}
		}
		recordLive(t, db, engine.Policy())
		deps[i] = &tools.Deps{Policy: engine, DB: db, Backend: backend.Backend{Payments: st, Orders: st, Customers: st}, Logger: slog.New(slog.DiscardHandler)}
	}
	return dir, deps
}

func handler(t testing.TB, d *tools.Deps, name string) server.ToolHandlerFunc {
	t.Helper()
	for _, st := range tools.ServerTools(d) {
		if st.Tool.Name == name {
			return st.Handler
		}
	}
	t.Fatalf("no tool %s", name)
	return nil
}

// TestRollingRefundLimitCannotBeRaced: 50 parallel refunds of 20.00 by one
// support agent, through two handles on one database, against the shipped
// 500.00-per-24h limit: exactly 25 are allowed and 25 wait for a person.
func TestRollingRefundLimitCannotBeRaced(t *testing.T) {
	const n = 50
	_, deps := limitFixture(t, n)
	refund := [2]server.ToolHandlerFunc{handler(t, deps[0], "refund_order"), handler(t, deps[1], "refund_order")}
	ctx := tools.WithAgent(context.Background(), "demo-agent")

	var mu sync.Mutex
	got := map[string]int{}
	rules := map[string]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := refund[i%2](ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
				Arguments: map[string]any{"order_id": fmt.Sprintf("ord_l%03d", i), "amount": "20.00", "reason": "limit test"}}})
			if err != nil {
				t.Error(err)
				return
			}
			out, _ := res.StructuredContent.(*tools.ActionResult)
			if out == nil {
				t.Errorf("refund %d: unexpected result %+v", i, res.StructuredContent)
				return
			}
			mu.Lock()
			got[out.Decision]++
			rules[out.Rule]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got[policy.Allow] != 25 || got[policy.RequireApproval] != 25 || len(got) != 2 {
		t.Fatalf("decisions = %v, want 25 allow and 25 require_approval", got)
	}
	limited := 0
	for r, c := range rules {
		if strings.Contains(r, "agent_refunded_24h + amount_base > 500.00") {
			limited += c
		}
	}
	if limited != 25 {
		t.Fatalf("%d decisions name the 24 h limit rule, want 25: %v", limited, rules)
	}
	// The store moved exactly 25 × 20.00.
	var total int64
	for i := range n {
		o, err := deps[0].Backend.Orders.Order(context.Background(), fmt.Sprintf("ord_l%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		total += o.Refunded.Minor
	}
	if total != 50000 {
		t.Fatalf("store refunded %d minor units, want 50000", total)
	}
}

// TestCustomerRefundCountLimit: the fourth refund to one customer within 30
// days needs a person, however small.
func TestCustomerRefundCountLimit(t *testing.T) {
	_, deps := limitFixture(t, 1)
	refund := handler(t, deps[0], "refund_order")
	ctx := tools.WithAgent(context.Background(), "senior-bot")
	var decisions []string
	for range 4 {
		res, err := refund(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
			Arguments: map[string]any{"order_id": "ord_l000", "amount": "1.00", "reason": "count test"}}})
		if err != nil {
			t.Fatal(err)
		}
		decisions = append(decisions, res.StructuredContent.(*tools.ActionResult).Decision)
	}
	want := []string{policy.Allow, policy.Allow, policy.Allow, policy.RequireApproval}
	if strings.Join(decisions, ",") != strings.Join(want, ",") {
		t.Fatalf("decisions = %v, want %v", decisions, want)
	}
}
