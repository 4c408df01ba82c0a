package tools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// TestRefundChangesReportedUnderRace: the embedded store reports the order
// as each refund left it, in the refund's own transaction, so a refund's
// before and after are exact even when refunds on one order race from two
// processes: on each order the executed refunds' [before, after] ranges
// follow each other with no gap and no overlap, from 0.00 to what the
// store holds, and each range is the refund's amount.
func TestRefundChangesReportedUnderRace(t *testing.T) {
	t.Parallel()
	var orders []concOrder
	for i := range 4 {
		orders = append(orders, concOrder{id: fmt.Sprintf("ord_r%d", i), customer: fmt.Sprintf("cus_r%d", i), total: "500.00"})
	}
	e := newConcEnv(t, orders, "senior-bot", "senior-bot")
	ctx := context.Background()
	refund := []server.ToolHandlerFunc{concTool(t, e.deps[0], "refund_order"), concTool(t, e.deps[1], "refund_order")}
	var wg sync.WaitGroup
	for i := range 12 { // 3 per order: the shipped policy's limit per customer
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := refund[i%2](tools.WithAgent(ctx, "senior-bot"), mcp.CallToolRequest{Params: mcp.CallToolParams{
				Name: "refund_order", Arguments: map[string]any{"order_id": orders[i%4].id, "amount": fmt.Sprintf("%d.00", 10+i), "reason": "race"}}})
			if err != nil || res.IsError {
				t.Errorf("refund %d: %v %s", i, err, text(res))
			}
		}()
	}
	wg.Wait()
	for _, d := range e.deps {
		d.DB.Settle(ctx)
	}
	type span struct{ before, after, amount int64 }
	spans := map[string][]span{}
	err := e.deps[0].DB.Records(ctx, storage.Filter{Tool: "refund_order"}, func(r *storage.Record) error {
		if r.Phase != storage.PhaseOutcome || r.Outcome != storage.StatusExecuted {
			return nil
		}
		var c storage.Changes
		if err := json.Unmarshal(r.Changes, &c); err != nil {
			return fmt.Errorf("record %d: changes %s: %v", r.Seq, r.Changes, err)
		}
		if c.Source != storage.ChangesReported || len(c.Fields) != 2 || c.Fields[0].Field != "refunded" {
			return fmt.Errorf("record %d: changes %s, want refunded/refundable reported by the system of record", r.Seq, r.Changes)
		}
		var before, after mandate.Money
		if json.Unmarshal(c.Fields[0].Before, &before) != nil || json.Unmarshal(c.Fields[0].After, &after) != nil {
			return fmt.Errorf("record %d: refunded before/after unknown: %s", r.Seq, r.Changes)
		}
		var args struct {
			Amount string `json:"amount"`
		}
		json.Unmarshal(r.Args, &args)
		amount, err := mandate.ParseMoney(args.Amount, "USD")
		if err != nil {
			return err
		}
		spans[c.OrderID] = append(spans[c.OrderID], span{before.Minor, after.Minor, amount.Minor})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range orders {
		got := spans[o.id]
		if len(got) != 3 {
			t.Fatalf("%s: %d executed refunds with changes, want 3", o.id, len(got))
		}
		sort.Slice(got, func(i, j int) bool { return got[i].before < got[j].before })
		at := int64(0)
		for _, s := range got {
			if s.before != at || s.after-s.before != s.amount {
				t.Fatalf("%s: refunds %+v do not follow each other from 0 by their amounts", o.id, got)
			}
			at = s.after
		}
		held, err := e.deps[0].Backend.Orders.Order(ctx, o.id)
		if err != nil {
			t.Fatal(err)
		}
		if held.Refunded.Minor != at {
			t.Fatalf("%s: the store holds %d refunded, the changes end at %d", o.id, held.Refunded.Minor, at)
		}
	}
}
