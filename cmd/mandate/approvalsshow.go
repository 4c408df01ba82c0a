package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

// argsSummary shows arguments as k=v pairs, the reason last.
func argsSummary(raw json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	var parts []string
	for _, k := range []string{"order_id", "customer_id", "amount", "field", "value", "reason"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// oneLine keeps agent-supplied text from breaking a table or driving the
// terminal: long text is cut to n characters, and control, bidi and other
// hidden characters (newlines too) are shown escaped, as ⟨U+202E⟩, after
// the cut so that no escape is cut in half.
func oneLine(s string, n int) string {
	return mandate.Visible(mandate.Truncate(s, n), false)
}

// recordNote is what a lineage line says beyond its columns: the approver
// when it is not the one in BY, their comment, and any error.
func recordNote(r *storage.Record) string {
	var parts []string
	if r.Approver != "" && r.Approver != r.Agent {
		parts = append(parts, "approver: "+r.Approver)
	}
	if r.Comment != "" {
		parts = append(parts, "comment: "+r.Comment)
	}
	if r.Error != "" {
		parts = append(parts, r.Error)
	}
	if c := storage.ChangesSummary(r.Changes); c != "" {
		parts = append(parts, "changed: "+c)
	}
	return strings.Join(parts, "; ")
}

func runApprovalsShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("approvals show", "mandate approvals show ID [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	id, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	return printAction(ctx, db, id, stdout)
}

func printAction(ctx context.Context, db *storage.DB, id string, w io.Writer) error {
	a, err := db.Action(ctx, id)
	if err != nil {
		return err
	}
	ap, err := db.Approval(ctx, id)
	if err != nil {
		return err
	}
	// The row is what anyone with write access to the database could
	// have rewritten; say so before showing it when its records disagree.
	ds, err := db.CheckAction(ctx, id)
	if err != nil {
		return err
	}
	if len(ds) > 0 {
		fmt.Fprintln(w, "WARNING: this action's row DISAGREES with its audit records; the lineage below is what was recorded (mandate audit verify checks every action):")
		for _, d := range ds {
			fmt.Fprintln(w, "  "+oneLine(d.String(), 300))
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, oneLine(v, 1000))
		}
	}
	row("action", a.ID)
	row("status", a.Status)
	row("agent", a.Agent)
	row("tool", a.Tool)
	row("args", string(a.Args))
	row("rule", a.Rule)
	row("created", a.CreatedAt.UTC().Format(time.RFC3339))
	if a.Status == storage.StatusPending {
		row("expires", a.ExpiresAt.UTC().Format(time.RFC3339))
		held, err := heldBy(ctx, db, a.Agent)
		if err != nil {
			return err
		}
		row("held", strings.TrimPrefix(held, "held: "))
	}
	// What it changes: asked for, while it waits (the value it replaces is
	// read from the system of record when it is carried out); carried
	// out, the before and after its outcome recorded.
	if a.Status == storage.StatusPending && a.Tool == "update_account" {
		var u struct{ Field, Value string }
		if json.Unmarshal(a.Args, &u) == nil && u.Field != "" {
			row("would set", fmt.Sprintf("%s to %q (the value it replaces is read when it is carried out)", u.Field, u.Value))
		}
	}
	err = db.Records(ctx, storage.Filter{ActionID: id}, func(r *storage.Record) error {
		if c := storage.ChangesSummary(r.Changes); c != "" && r.Phase == storage.PhaseOutcome {
			row("changed", c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	row("decided by", ap.Approver)
	row("comment", ap.Comment)
	row("result", string(a.Result))
	row("error", a.Error)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nlineage:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SEQ\tTIME\tPHASE\tBY\tDECISION\tOUTCOME\tNOTE")
	err = db.Records(ctx, storage.Filter{ActionID: id}, func(r *storage.Record) error {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.UTC().Format("2006-01-02 15:04:05"), r.Phase, oneLine(r.Agent, 40),
			r.Decision, r.Outcome, oneLine(recordNote(r), 120))
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}
