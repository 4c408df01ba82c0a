// Command bare is the baseline the end-to-end benchmark compares Mandate
// with: an mcp-go stdio server that makes the same embedded-store refund
// write (backend/store, same SQLite file settings) with no guard, no policy
// and no audit trail, plus get_order and a tool that does nothing. It is a
// benchmark fixture, not a product: never publish tools like these to an
// agent.
//
// With -intent FILE it is the floor instead: before each refund it commits
// one row naming it to FILE, a SQLite database with Mandate's settings
// (storage.DSN: WAL, synchronous=FULL), and waits for that commit. That is
// the one cost issue 15 says no guard can avoid, an intent made durable
// before the system of record acts, with nothing else: no decision, no
// limits, no hash chain, no outcome record.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

func main() {
	storePath := flag.String("store", "store.db", "embedded store file")
	workers := flag.Int("workers", 0, "mcp-go stdio worker pool size (0: mcp-go's default)")
	intentPath := flag.String("intent", "", "commit one intent row to this SQLite file, durably, before each refund (the floor)")
	flag.Parse()
	st, err := store.Open(*storePath)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	var intent *sql.Stmt
	if *intentPath != "" {
		db, err := sql.Open("sqlite", storage.DSN(*intentPath))
		if err != nil {
			log.Fatal(err)
		}
		defer db.Close()
		db.SetMaxOpenConns(1) // one writer, as SQLite allows
		if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS intents (id TEXT PRIMARY KEY, order_id TEXT NOT NULL, amount TEXT NOT NULL, reason TEXT NOT NULL)`); err != nil {
			log.Fatal(err)
		}
		if intent, err = db.Prepare(`INSERT INTO intents (id, order_id, amount, reason) VALUES (?, ?, ?, ?)`); err != nil {
			log.Fatal(err)
		}
	}

	s := server.NewMCPServer("bare", "0", server.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("noop", mcp.WithDescription("does nothing")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultStructured(map[string]any{"ok": true}, "ok"), nil
		})
	s.AddTool(mcp.NewTool("get_order", mcp.WithString("order_id", mcp.Required())),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			o, err := st.Order(ctx, req.GetString("order_id", ""))
			if err != nil {
				return mcp.NewToolResultError(mandate.ErrorMessage(err)), nil
			}
			return mcp.NewToolResultStructured(map[string]any{
				"order_id": o.ID, "customer_id": o.CustomerID, "status": o.Status, "currency": o.Total.Currency,
				"total": o.Total.String(), "refunded": o.Refunded.String(), "refundable": o.Refundable().String(),
			}, "order "+o.ID), nil
		})
	s.AddTool(mcp.NewTool("refund_order", mcp.WithString("order_id", mcp.Required()), mcp.WithString("amount", mcp.Required()),
		mcp.WithString("reason", mcp.Required()), mcp.WithString("idempotency_key")),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			o, err := st.Order(ctx, req.GetString("order_id", ""))
			if err != nil {
				return mcp.NewToolResultError(mandate.ErrorMessage(err)), nil
			}
			amount, err := mandate.ParseMoney(req.GetString("amount", ""), o.Total.Currency)
			if err != nil {
				return mcp.NewToolResultError(mandate.ErrorMessage(err)), nil
			}
			key := req.GetString("idempotency_key", "")
			if key == "" {
				var b [10]byte
				rand.Read(b[:])
				key = "act_" + hex.EncodeToString(b[:])
			}
			if intent != nil {
				if _, err := intent.ExecContext(ctx, key, o.ID, amount.String(), req.GetString("reason", "")); err != nil {
					return mcp.NewToolResultError("intent not recorded: " + err.Error()), nil
				}
			}
			r, err := st.Refund(ctx, backend.RefundRequest{OrderID: o.ID, Amount: amount, Reason: req.GetString("reason", ""), IdempotencyKey: key})
			if err != nil {
				return mcp.NewToolResultError(mandate.ErrorMessage(err)), nil
			}
			return mcp.NewToolResultStructured(map[string]any{
				"action_id": key, "status": "executed",
				"result": map[string]any{"refund_id": r.ID, "order_id": r.OrderID, "amount": r.Amount.String(), "currency": r.Amount.Currency},
			}, "Done. Reference "+key+"."), nil
		})

	stdio := server.NewStdioServer(s)
	stdio.SetErrorLogger(log.New(os.Stderr, "", 0))
	if *workers > 0 {
		server.WithWorkerPoolSize(*workers)(stdio)
		server.WithQueueSize(4 * *workers)(stdio)
	}
	if err := stdio.Listen(context.Background(), os.Stdin, os.Stdout); err != nil && err != io.EOF && err != context.Canceled {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
