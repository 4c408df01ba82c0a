package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

const remediateSynopsis = "mandate remediate --agent NAME --since 2h [--customer ID] [--format text|json] [--apply --as ADMIN [--token-file FILE]] [--audit-key FILE] [--db FILE --store FILE | --backend FILE]"

// runRemediate prints, and with --apply carries out, the plan that puts
// back what an agent changed (tools.PlanRemediation, ApplyRemediation).
func runRemediate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("remediate", remediateSynopsis, stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs) // reverts are recorded: a keyed trail needs the key
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "the store the agent acted on (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	agent := fs.String("agent", "", "the agent whose changes to put back (required)")
	since := fs.String("since", "", "how far back: a duration such as 2h or 90m, whole days such as 2d, or 0 for everything the agent did (required)")
	customer := fs.String("customer", "", "only this customer's account")
	format := fs.String("format", "text", "text or json")
	apply := fs.Bool("apply", false, "carry out the reverts, as --as, each an update_account action decided by the policy (revert_update_account); without it nothing changes")
	as := fs.String("as", env("MANDATE_APPROVER", ""), "with --apply: your identity, as named in policy.csv (env MANDATE_APPROVER)")
	tokenFile := fs.String("token-file", "", "with --apply: a file holding your token from mandate admin user token (or set MANDATE_APPROVER_TOKEN); else your password is asked for (or MANDATE_ADMIN_PASSWORD)")
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *agent == "" || *since == "" {
		return usageError{"remediate: name the agent with --agent and the window with --since (e.g. --since 2h)"}
	}
	window, err := parseWindow(*since)
	if err != nil {
		return usageError{"remediate: --since " + err.Error()}
	}
	if *format != "text" && *format != "json" {
		return usageError{fmt.Sprintf("remediate: --format %q: use text or json", *format)}
	}
	var cred approverCredentials
	if *apply {
		if cred, err = readApproverCredentials(*tokenFile, stderr); err != nil {
			return err
		}
		if *as == "" && cred.token == "" {
			return usageError{"remediate --apply: say who you are with --as NAME (and your password), or give your token with --token-file or MANDATE_APPROVER_TOKEN"}
		}
	} else if *as != "" || *tokenFile != "" {
		return usageError{"remediate: --as and --token-file go with --apply"}
	}
	ad, err := openApprovalDeps(ctx, *dbPath, *storePath, *backendFile, &pf, stderr, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer ad.Close()
	var from time.Time // 0: the whole trail
	if window > 0 {
		from = time.Now().Add(-window)
	}
	// A mistyped name would otherwise give an empty plan and no hint.
	everRecorded, err := hasRecords(ctx, ad.deps.DB, *agent, time.Time{})
	if err != nil {
		return err
	}
	var toolNames []string
	for _, st := range tools.ServerTools(&tools.Deps{}) {
		toolNames = append(toolNames, st.Tool.Name)
	}
	if pol := ad.deps.Policy.Policy(); !everRecorded && !auth.IsAgent(pol, *agent, toolNames) {
		return usageError{fmt.Sprintf("remediate: %q is not an agent in the policy and has no recorded actions; agents there: %s", oneLine(*agent, 60), agentNames(pol, toolNames))}
	}
	recorded := everRecorded
	if everRecorded {
		if recorded, err = hasRecords(ctx, ad.deps.DB, *agent, from); err != nil {
			return err
		}
	}
	by := ""
	if *apply {
		// Before the plan: a refused sign-in shows nothing and changes nothing.
		if by, err = authenticatePerson(ctx, ad.deps, *as, cred); err != nil {
			return fmt.Errorf("remediate: %s", mandate.ErrorMessage(err))
		}
	}
	plan, err := tools.PlanRemediation(ctx, ad.deps, *agent, from, *customer)
	if err != nil {
		return fmt.Errorf("remediate: %s", mandate.ErrorMessage(err))
	}
	if !*apply {
		if *format == "json" {
			return writeJSON(stdout, plan)
		}
		printPlan(stdout, plan)
		if !recorded {
			if from.IsZero() {
				fmt.Fprintf(stdout, "\nnote: %s has no recorded actions in the whole trail\n", oneLine(*agent, 60))
			} else {
				fmt.Fprintf(stdout, "\nnote: %s has no recorded actions in the last %s\n", oneLine(*agent, 60), *since)
			}
		}
		if err := printWaiting(ctx, stdout, ad.deps.DB, *agent); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nDry run: nothing was changed. To revert the %d change(s) above: mandate remediate --agent %s --since %s --apply --as NAME\n",
			len(plan.Revert), oneLine(*agent, 60), *since)
		return nil
	}
	if err := tools.RecordPlan(ctx, ad.deps, by, plan, *customer); err != nil {
		return fmt.Errorf("remediate: the plan could not be recorded in the audit trail, so nothing was reverted: %s", mandate.ErrorMessage(err))
	}
	results := tools.ApplyRemediation(ctx, ad.deps, by, plan)
	counts := map[string]int{}
	for _, r := range results {
		counts[r.Status]++
	}
	if *format == "json" {
		if err := writeJSON(stdout, map[string]any{"plan": plan, "results": results}); err != nil {
			return err
		}
	} else {
		printPlan(stdout, plan)
		fmt.Fprintf(stdout, "\nApplied by %s:\n", by)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  STATUS\tACTION\tCUSTOMER\tFIELD\tREVERT\tMESSAGE")
		for _, r := range results {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", r.Status, r.ActionID, oneLine(r.CustomerID, 40), r.Field, orDashS(r.RevertID), oneLine(r.Message, 160))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "reverted %d, in progress in another run %d, pending approval %d, skipped %d, failed %d\n",
			counts["reverted"], counts["in progress"], counts["pending"], counts["skipped"], counts["failed"])
	}
	if counts["failed"] > 0 {
		return fmt.Errorf("remediate: %d revert(s) failed", counts["failed"])
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printPlan prints a plan for people. Values set by the agent are shown
// made visible (mandate.Visible): they are attacker-controlled text.
func printPlan(w io.Writer, p *tools.Plan) {
	if p.Since.IsZero() {
		fmt.Fprintf(w, "Changes by %s, over the whole trail\n", oneLine(p.Agent, 60))
	} else {
		fmt.Fprintf(w, "Changes by %s since %s\n", oneLine(p.Agent, 60), p.Since.UTC().Format(time.RFC3339))
	}
	section := func(title string, n int) { fmt.Fprintf(w, "\n%s (%d):\n", title, n) }
	section("To revert", len(p.Revert))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ACTION\tTIME\tCUSTOMER\tFIELD\tNOW\tPUT BACK\tNOTE")
	for _, it := range p.Revert {
		note := ""
		if len(it.Covers) > 0 {
			note = "also undoes " + strings.Join(it.Covers, ", ")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.ActionID, it.Time.UTC().Format(time.RFC3339), oneLine(it.CustomerID, 40), it.Field,
			oneLine(it.From, 60), oneLine(it.To, 60), note)
	}
	tw.Flush()
	section("Skipped", len(p.Skipped))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ACTION\tTIME\tCUSTOMER\tFIELD\tWHY")
	for _, it := range p.Skipped {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", it.ActionID, it.Time.UTC().Format(time.RFC3339), oneLine(it.CustomerID, 40), it.Field, oneLine(it.Why, 200))
	}
	tw.Flush()
	section("Not reversible by Mandate (refunds and cancellations: handle them in the system of record)", len(p.NotReversible))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ACTION\tTIME\tTOOL\tORDER\tCUSTOMER\tWHAT\tREFERENCE")
	for _, it := range p.NotReversible {
		what := "refunded " + it.From
		if it.Tool == "cancel_order" {
			what = "status " + it.To + " -> " + it.From
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.ActionID, it.Time.UTC().Format(time.RFC3339), it.Tool, oneLine(it.OrderID, 40), oneLine(it.CustomerID, 40), oneLine(what, 60), orDashS(it.Ref))
	}
	tw.Flush()
}

// printWaiting lists the agent's actions still waiting for a person: not
// part of the plan (nothing was done yet, so nothing is reverted), but
// after an incident they are the next thing to deny. While the agent is
// suspended they are held anyway.
func printWaiting(ctx context.Context, w io.Writer, db *storage.DB, agent string) error {
	p, err := db.Pending(ctx, storage.PendingFilter{Agent: agent, Limit: storage.MaxPage})
	if err != nil || p.Total == 0 {
		return err
	}
	fmt.Fprintf(w, "\nStill waiting for a person (%d), not done so nothing to revert; deny them with mandate approvals deny ID --as NAME --comment TEXT:\n", p.Total)
	for _, a := range p.Actions {
		fmt.Fprintf(w, "  %s  %s  %s\n", a.ID, a.Tool, oneLine(argsSummary(a.Args), 100))
	}
	if rest := p.Total - len(p.Actions); rest > 0 {
		fmt.Fprintf(w, "  … and %d more: mandate approvals list --agent %s\n", rest, oneLine(agent, 60))
	}
	return nil
}

// errFound stops a walk over records at the first one.
var errFound = errors.New("found")

// hasRecords reports whether the audit trail holds any record of agent
// at or after since (the zero time: ever).
func hasRecords(ctx context.Context, db *storage.DB, agent string, since time.Time) (bool, error) {
	err := db.Records(ctx, storage.Filter{Agent: agent, Since: since}, func(*storage.Record) error { return errFound })
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}
