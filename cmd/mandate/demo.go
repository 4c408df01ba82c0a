package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// demoStep is one scripted tool call.
type demoStep struct {
	agent, note, tool string
	args              map[string]any
}

var demoScript = []demoStep{
	{"demo-agent", "look the order up first", "get_order", map[string]any{"order_id": "ord_1001"}},
	{"demo-agent", "a small refund: within a support agent's limit", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched"}},
	{"demo-agent", "a middle refund: a person must approve it", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "Late delivery goodwill"}},
	{"demo-agent", "a large refund: above what a support agent may do", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "Customer unhappy"}},
	{"demo-agent", "more than is left to refund on the order", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "95.00", "reason": "Full refund requested"}},
	{"demo-agent", "a customer whose account is 2 days old", "refund_order", map[string]any{"order_id": "ord_1005", "amount": "10.00", "reason": "Missing item"}},
	{"demo-agent", "cancel an order that has shipped", "cancel_order", map[string]any{"order_id": "ord_1003", "reason": "Customer changed their mind"}},
	{"demo-agent", "cancel an order that has not", "cancel_order", map[string]any{"order_id": "ord_1004", "reason": "Customer changed their mind"}},
	{"demo-agent", "change a phone number", "update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000000", "reason": "The customer has a new mobile number, confirmed on the call"}},
	{"demo-agent", "change an email: needs approval for a support agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada.lovelace@example.com", "reason": "The customer lost access to her old mailbox"}},
	{"senior-bot", "a 300.00 refund, more than a support agent may make, by a senior agent", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "300.00", "reason": "Late delivery goodwill"}},
	{"demo-agent", "an amount with too many decimals is bad input", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "1.005", "reason": "Typo"}},
	{"intruder", "an identity the policy does not know", "get_customer", map[string]any{"customer_id": "cus_ada"}},
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "mandate demo [--keep]", stderr)
	keep := fs.Bool("keep", false, "keep the temporary databases and print where they are")
	backendFile := fs.String("backend", "", "run the script against the systems of record this backend file names instead of a throwaway store; they must hold the demo data. Deliberately not read from MANDATE_BACKEND: the demo makes refunds, and must never reach a real system by accident")
	auditKey := auditKeyFlag(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "mandate-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	model := policy.Source{Name: "embedded model.conf", Data: mandate.DefaultModel}
	src := policy.Source{Name: "embedded policy.csv", Data: mandate.DefaultPolicy}
	pol, err := policy.Load(model, src)
	if err != nil {
		return err
	}
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"), storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer db.Close()
	// The demo decides, so its policy and rates are recorded as the live
	// ones, as serve and admin record theirs.
	if err := db.RecordPolicy(ctx, policyLoad(pol, model, src, "demo start", "")); err != nil {
		return err
	}
	if err := db.RecordRates(ctx, ratesLoad(rates.Default(), "demo start", "")); err != nil {
		return err
	}
	st, be, _, err := openBackend(ctx, *backendFile, filepath.Join(dir, "store.db"), false)
	if err != nil {
		return err
	}
	defer st.Close()
	deps := &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Backend: be}

	w := &demoWriter{w: stdout}
	w.printf("Mandate demo: a scripted agent session over MCP, in-process, against throwaway databases.\n")
	w.printf("Policy: the shipped policy.csv (version %s). Identities: demo-agent (support_agent), senior-bot (senior_agent).\n\n", pol.Version)
	if *backendFile != "" {
		w.printf("Systems of record: those named in %s (only the audit database is throwaway).\n", *backendFile)
		w.printf("Each step's note says what it shows on the embedded demo data; the rules decide on the facts your systems report (with Stripe, what the payment received), so some outcomes may differ.\n\n")
	}

	clients := map[string]*client.Client{}
	var pending string
	for i, step := range demoScript {
		c, ok := clients[step.agent]
		if !ok {
			if c, err = demoClient(ctx, deps, step.agent); err != nil {
				return err
			}
			defer c.Close()
			clients[step.agent] = c
		}
		res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: step.tool, Arguments: step.args}})
		if err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		args, _ := json.Marshal(step.args)
		w.printf("%2d. %s: %s\n    %s → %s %s\n", i+1, step.agent, step.note, step.agent, step.tool, args)
		var out struct {
			ActionID string `json:"action_id"`
			Decision string `json:"decision"`
			Rule     string `json:"rule"`
			Message  string `json:"message"`
			Error    string `json:"error"`
		}
		b, _ := json.Marshal(res.StructuredContent)
		if res.StructuredContent == nil && len(res.Content) > 0 {
			// A plain error: {error, message} as JSON text.
			if tc, ok := res.Content[0].(mcp.TextContent); ok {
				b = []byte(tc.Text)
			}
		}
		_ = json.Unmarshal(b, &out)
		switch {
		case out.Decision != "":
			w.printf("    %s  %s\n    %s\n\n", strings.ToUpper(out.Decision), out.Rule, wrap(out.Message, 100, "    "))
			if out.Decision == policy.RequireApproval && pending == "" {
				pending = out.ActionID
			}
		case res.IsError:
			w.printf("    ERROR (%s) %s\n\n", out.Error, out.Message)
		default:
			w.printf("    %s\n\n", b)
		}
	}
	if pending != "" {
		res, err := clients["demo-agent"].CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get_action_status", Arguments: map[string]any{"action_id": pending}}})
		if err == nil {
			b, _ := json.Marshal(res.StructuredContent)
			var st tools.ActionStatus
			_ = json.Unmarshal(b, &st)
			w.printf("%2d. demo-agent: check on the pending refund\n    get_action_status → %s: %s\n\n", len(demoScript)+1, st.Status, st.Message)
		}
	}

	w.printf("The audit trail (`mandate audit export` prints it as JSON Lines):\n\n")
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAGENT\tTOOL\tPHASE\tDECISION\tOUTCOME\tRULE")
	err = db.Records(ctx, storage.Filter{}, func(r *storage.Record) error {
		rule := r.Rule
		if i := strings.Index(rule, ": p, "); i >= 0 {
			rule = rule[:i]
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Agent, r.Tool, r.Phase, r.Decision, r.Outcome, rule)
		return nil
	})
	if err != nil {
		return err
	}
	tw.Flush()
	// Only the embedded store keeps state the demo can show; a backend file
	// may name services (stripe-mock keeps none) whose answer says nothing.
	if *backendFile == "" {
		if o, err := be.Orders.Order(ctx, "ord_1001"); err == nil {
			w.printf("\nIn the store, ord_1001 now shows %s %s refunded: only allowed actions reached it.\n", o.Refunded, o.Refunded.Currency)
		}
	} else {
		w.printf("\nOnly the allowed actions above reached the systems of record named in %s; their own records show what changed.\n", *backendFile)
	}
	if *keep {
		w.printf("Databases kept in %s\n", dir)
	}
	return w.err
}

func demoClient(ctx context.Context, deps *tools.Deps, agent string) (*client.Client, error) {
	d := *deps
	d.Agent = agent // an in-process server serves one configured identity, like stdio
	c, err := client.NewInProcessClient(tools.NewServer(&d, version))
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "mandate-demo", Version: version}
	if _, err := c.Initialize(ctx, init); err != nil {
		return nil, err
	}
	return c, nil
}

type demoWriter struct {
	w   io.Writer
	err error
}

func (d *demoWriter) printf(format string, args ...any) {
	if d.err == nil {
		_, d.err = fmt.Fprintf(d.w, format, args...)
	}
}

// wrap breaks s into lines of at most width, each after the first indented.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && n+1+len(word) > width {
			b.WriteString("\n" + indent)
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}
