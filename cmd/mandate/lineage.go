package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

const lineageUsage = `mandate lineage (--customer ID | --order ID | --agent NAME | --trace ID)
                [--since 24h] [--trace ID] [--format text|jsonl] [--redact] [--db FILE]`

// runLineage prints, in time order, every attempt, decision, approval and
// outcome touching one customer, order or agent (storage.Lineage says
// exactly which records), with who asked, who approved, under which rule
// and policy version, and what changed.
func runLineage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lineage", lineageUsage, stderr)
	dbPath := dbFlag(fs)
	customer := fs.String("customer", "", "the customer (e.g. cus_ada): its account changes, and every action on its orders")
	order := fs.String("order", "", "the order (e.g. ord_1001)")
	agent := fs.String("agent", "", "the agent identity: everything it asked for, and what became of it")
	since := fs.String("since", "", "only records at or after this time: RFC 3339, a date, or a duration ago such as 24h or 7d (default, or 0: the whole trail)")
	trace := fs.String("trace", "", "only the actions asked for in this W3C trace (32 hex digits); alone, that trace's whole lineage")
	format := fs.String("format", "text", "text (for people) or jsonl (one audit record per line, as audit export)")
	redact := fs.Bool("redact", false, "mask customer personal data (email, phone, address, name), before and after values included")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	n := 0
	for _, s := range []string{*customer, *order, *agent} {
		if s != "" {
			n++
		}
	}
	if n > 1 || (n == 0 && *trace == "") {
		return usageError{"lineage: give exactly one of --customer ID, --order ID or --agent NAME (or --trace ID alone)"}
	}
	if *format != "text" && *format != "jsonl" {
		return usageError{fmt.Sprintf("lineage: --format %q: use text or jsonl", *format)}
	}
	from, err := parseWhen("since", *since, time.Now())
	if err != nil {
		return err
	}
	traceID, err := traceFlag(*trace)
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriter(stdout)
	f := storage.LineageFilter{CustomerID: *customer, OrderID: *order, Agent: *agent, TraceID: traceID, Since: from}
	count := 0
	enc := newEncoder(w)
	err = db.Lineage(ctx, f, func(r *storage.Record) error {
		count++
		if *redact {
			r = r.Redacted()
		}
		if *format == "jsonl" {
			return enc.Encode(r)
		}
		_, err := fmt.Fprintln(w, LineageLine(r))
		return err
	})
	if err != nil {
		return err
	}
	if count == 0 && *format == "text" {
		if f.Since.IsZero() {
			fmt.Fprintf(w, "nothing recorded for %s\n", lineageSubject(f))
		} else {
			fmt.Fprintf(w, "nothing recorded for %s since %s\n", lineageSubject(f), f.Since.Local().Format("2006-01-02 15:04:05 MST"))
		}
	}
	return w.Flush()
}

// traceFlag checks a --trace value: a W3C trace-id, 32 hex digits (case
// is ignored), not all zero.
func traceFlag(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	t := strings.ToLower(s)
	if len(t) != 32 || strings.Trim(t, "0123456789abcdef") != "" || t == strings.Repeat("0", 32) {
		return "", usageError{fmt.Sprintf("--trace %q: give a W3C trace-id, 32 hex digits such as 4bf92f3577b34da6a3ce929d0e0e4736", mandate.TruncateBytes(s, 80))}
	}
	return t, nil
}

func lineageSubject(f storage.LineageFilter) string {
	switch {
	case f.CustomerID != "":
		return "customer " + f.CustomerID
	case f.OrderID != "":
		return "order " + f.OrderID
	case f.Agent != "":
		return "agent " + f.Agent
	}
	return "trace " + f.TraceID
}

// LineageLine is one audit record as a line of a lineage, for people:
// when, what step, who, what for, the decision with its rule and policy
// version, the outcome, and what changed. Text anyone could have written
// is shown with hidden characters escaped (mandate.Visible).
func LineageLine(r *storage.Record) string {
	v := func(s string) string { return mandate.Visible(s, false) }
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-8s %-15s %s", r.Time.Local().Format("2006-01-02 15:04:05"), r.Phase, r.Tool, v(subjectOf(r)))
	who := "by " + v(r.Agent)
	if r.Phase == storage.PhaseApproval && r.Approver != "" {
		who = "by " + v(r.Approver) + " (approver)"
	}
	fmt.Fprintf(&b, "  %s", who)
	if r.Decision != "" {
		fmt.Fprintf(&b, "  %s", r.Decision)
		if r.Rule != "" {
			fmt.Fprintf(&b, " [%s]", v(r.Rule))
		}
		if r.PolicyVersion != "" {
			fmt.Fprintf(&b, " policy %s", v(short(r.PolicyVersion)))
		}
	}
	if r.Outcome != "" {
		fmt.Fprintf(&b, "  -> %s", v(r.Outcome))
	}
	if c := storage.ChangesSummary(r.Changes); c != "" {
		fmt.Fprintf(&b, "  changed: %s", v(c))
	}
	if r.Comment != "" {
		fmt.Fprintf(&b, "  comment: %s", v(r.Comment))
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  error: %s", v(r.Error))
	}
	fmt.Fprintf(&b, "  (%s", r.ActionID)
	if r.TraceID != "" {
		fmt.Fprintf(&b, ", trace %s", r.TraceID)
	}
	if r.ConversationID != "" {
		fmt.Fprintf(&b, ", conversation %s", v(r.ConversationID))
	}
	b.WriteString(")")
	return b.String()
}

// short cuts a long policy version (a digest) to something a person can
// compare by eye.
func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// subjectOf names what a record is about from its arguments: the customer
// and field, or the order and amount. Values are never shown here: they
// are personal data (update_account's value) or in changes.
func subjectOf(r *storage.Record) string {
	var a struct {
		CustomerID string `json:"customer_id"`
		OrderID    string `json:"order_id"`
		Field      string `json:"field"`
		Amount     string `json:"amount"`
		ActionID   string `json:"action_id"`
	}
	_ = json.Unmarshal(r.Args, &a)
	var parts []string
	for _, p := range []string{a.CustomerID, a.OrderID, a.Field, a.Amount, a.ActionID} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}
