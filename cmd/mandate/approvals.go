package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const sub = "approvals: name a subcommand: list, show ID, approve ID --as NAME, deny ID --as NAME --comment TEXT"
	if len(args) == 0 {
		return usageError{sub}
	}
	switch args[0] {
	case "list":
		return runApprovalsList(ctx, args[1:], stdout, stderr)
	case "show":
		return runApprovalsShow(ctx, args[1:], stdout, stderr)
	case "approve":
		return runApprovalsDecide(ctx, args[1:], true, stdout, stderr)
	case "deny":
		return runApprovalsDecide(ctx, args[1:], false, stdout, stderr)
	}
	return usageError{fmt.Sprintf("approvals: unknown subcommand %q; use list, show, approve or deny", args[0])}
}

func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's database (env MANDATE_DB)")
}

// parseWithID parses flags that may come before or after one positional
// action id: `approve act_1 --as alice` and `approve --as alice act_1`.
func parseWithID(fs *flag.FlagSet, args []string) (string, error) {
	var id string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		if id != "" {
			return "", usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
		}
		id, args = fs.Arg(0), fs.Args()[1:]
	}
	if id == "" {
		return "", usageError{fs.Name() + ": name the action id, e.g. act_3f2a…"}
	}
	return id, nil
}

func runApprovalsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("approvals list", "mandate approvals list [--status pending] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	status := fs.String("status", storage.StatusPending, "pending, approved, denied, expired, executing, executed, failed, or all")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now()
	if _, err := db.ExpirePending(ctx, now); err != nil {
		return err
	}
	f := storage.ActionFilter{Status: *status}
	if f.Status == "all" {
		f.Status = ""
	}
	acts, err := db.Actions(ctx, f)
	if err != nil {
		return err
	}
	if len(acts) == 0 {
		fmt.Fprintf(stdout, "no %s actions\n", *status)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tAGENT\tTOOL\tARGS\tCREATED\tEXPIRES IN")
	for _, a := range acts {
		left := "-"
		if a.Status == storage.StatusPending {
			left = a.ExpiresAt.Sub(now).Round(time.Minute).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Status, a.Agent, a.Tool, oneLine(argsSummary(a.Args), 60),
			a.CreatedAt.UTC().Format("2006-01-02 15:04"), left)
	}
	return tw.Flush()
}

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

// oneLine keeps agent-supplied text from breaking a table: control
// characters become spaces and long text is cut.
func oneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len([]rune(s)) > n {
		return string([]rune(s)[:n]) + "…"
	}
	return s
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
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, oneLine(v, 200))
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
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.UTC().Format("2006-01-02 15:04:05"), r.Phase, r.Agent,
			r.Decision, r.Outcome, oneLine(r.Error, 80))
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// approvalDeps opens what approving needs: the policy, the gateway
// database and the store the action runs against. The store must exist:
// approving against a fresh demo store by mistake would be worse than an
// error.
type approvalDeps struct {
	deps *tools.Deps
	st   closers
}

func (a *approvalDeps) Close() {
	a.deps.DB.Close()
	a.st.Close()
}

func openApprovalDeps(ctx context.Context, dbPath, storePath, backendFile string, pf *policyFlags, stderr io.Writer) (*approvalDeps, error) {
	pol, err := pf.load()
	if err != nil {
		return nil, err
	}
	db, err := openExistingDB(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	st, be, _, err := openBackend(ctx, backendFile, storePath, true)
	if err != nil {
		db.Close()
		return nil, err
	}
	log, err := newLogger(stderr, "warn", "text")
	if err != nil {
		db.Close()
		st.Close()
		return nil, err
	}
	return &approvalDeps{st: st, deps: &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Backend: be, Logger: log}}, nil
}

func runApprovalsDecide(ctx context.Context, args []string, approve bool, stdout, stderr io.Writer) error {
	name, synopsis := "approvals approve", "mandate approvals approve ID --as NAME [--comment TEXT] [--db FILE --store FILE]"
	if !approve {
		name, synopsis = "approvals deny", "mandate approvals deny ID --as NAME --comment TEXT [--db FILE --store FILE]"
	}
	fs := newFlags(name, synopsis, stderr)
	dbPath := dbFlag(fs)
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "the store the action runs against (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	as := fs.String("as", env("MANDATE_APPROVER", ""), "your identity, as named in policy.csv (env MANDATE_APPROVER); required")
	comment := fs.String("comment", "", "a note for the record; required to deny, and the agent passes it on")
	var pf policyFlags
	pf.register(fs)
	id, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	if *as == "" {
		return usageError{name + ": say who you are with --as NAME"}
	}
	if !approve && strings.TrimSpace(*comment) == "" {
		return usageError{name + ": give a reason with --comment; the agent passes it on to the customer"}
	}
	ad, err := openApprovalDeps(ctx, *dbPath, *storePath, *backendFile, &pf, stderr)
	if err != nil {
		return err
	}
	defer ad.Close()
	var act *storage.Action
	if approve {
		act, err = tools.Approve(ctx, ad.deps, id, *as, *comment)
	} else {
		act, err = tools.Deny(ctx, ad.deps, id, *as, *comment)
	}
	if err != nil {
		if act != nil {
			fmt.Fprintf(stdout, "%s: %s\n", act.ID, act.Status)
		}
		return fmt.Errorf("%s %s: %s", strings.TrimPrefix(name, "approvals "), id, mandate.ErrorMessage(err))
	}
	switch act.Status {
	case storage.StatusExecuted:
		fmt.Fprintf(stdout, "%s: approved by %s and executed: %s\n", act.ID, *as, act.Result)
	case storage.StatusFailed:
		fmt.Fprintf(stdout, "%s: approved by %s, but the system of record refused or failed: %s\n", act.ID, *as, act.Error)
		return fmt.Errorf("approve %s: the action failed", id)
	default:
		fmt.Fprintf(stdout, "%s: %s by %s\n", act.ID, act.Status, *as)
	}
	return nil
}
