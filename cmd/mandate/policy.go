package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

const policyUsage = `Usage:
  mandate policy check [--model F] [--policy F] [--strict] [--notes]
      lint the rules: what loads but cannot be what you meant
  mandate policy explain --agent A --tool T --args JSON [--store F | --attrs JSON]
  mandate policy explain --action ACTION_ID [--db F]
      say why a call, or a recorded one, gets its decision
  mandate policy test [--store F] CASES.yaml
      run the decisions you expect against the rules
  mandate policy replay --policy CANDIDATE [--db F] [--since 24h]
      re-decide recorded attempts under a candidate policy
Run 'mandate policy SUBCOMMAND -h' for its flags; docs/policy.md explains the rules.
`

// The policy commands let an admin see what an edit does before it is live:
// check lints it, explain says why a call gets its decision, test runs the
// admin's expected decisions, replay re-decides past traffic.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("policy", policyUsage, args, stdout, stderr); done {
		return err
	}
	switch args[0] {
	case "check":
		return runPolicyCheck(ctx, args[1:], stdout, stderr)
	case "explain":
		return runPolicyExplain(ctx, args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(ctx, args[1:], stdout, stderr)
	case "replay":
		return runPolicyReplay(ctx, args[1:], stdout, stderr)
	}
	return unknownSubcommand("policy", policyUsage, args[0], stderr)
}

// sources reads the model and policy files without loading them.
func (p *policyFlags) sources() (policy.Source, policy.Source, error) {
	m, err := source(p.model, "model.conf", mandate.DefaultModel)
	if err != nil {
		return m, policy.Source{}, err
	}
	pol, err := source(p.policy, "policy.csv", mandate.DefaultPolicy)
	return m, pol, err
}

// runPolicyCheck lints a policy. It stops on SIGINT or SIGTERM (ctx),
// which matters for a policy of many thousands of lines.
func runPolicyCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy check", "mandate policy check [--model F] [--policy F] [--strict] [--notes]", stderr)
	var pf policyFlags
	pf.register(fs)
	strict := fs.Bool("strict", false, "fail on warnings too, not only on errors")
	notes := fs.Bool("notes", false, "print notes too: role rules that member roles replace, often by design")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	m, pol, err := pf.sources()
	if err != nil {
		return err
	}
	p, findings, err := policy.Check(ctx, m, pol)
	if err != nil {
		return fmt.Errorf("policy check: stopped before the end: %w", err)
	}
	count := map[string]int{}
	for _, f := range findings {
		if f.Severity != policy.SevNote || *notes {
			fmt.Fprintln(stdout, f)
		}
		count[f.Severity]++
	}
	summary := fmt.Sprintf("%d errors, %d warnings, %d notes", count[policy.SevError], count[policy.SevWarning], count[policy.SevNote])
	if count[policy.SevNote] > 0 && !*notes {
		summary += " (--notes shows them)"
	}
	if p != nil {
		fmt.Fprintf(stdout, "%s: %d rules, %d role grants, version %s: %s\n", pol.Name, len(p.Rules), len(p.Grants), p.Version, summary)
	} else {
		fmt.Fprintf(stdout, "%s: does not load: %s\n", pol.Name, summary)
	}
	if count[policy.SevError] > 0 || (*strict && count[policy.SevWarning] > 0) {
		return fmt.Errorf("policy check: %s", summary)
	}
	return nil
}

func runPolicyExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy explain", "mandate policy explain --agent A --tool T --args JSON [--store F] [--db F] [--attrs JSON] [--model F] [--policy F] [--rates F]\n       mandate policy explain --agent A --tool T --attrs JSON [--model F] [--policy F]\n       mandate policy explain --action ACTION_ID [--db F] [--model F] [--policy F]", stderr)
	actionID := fs.String("action", "", "explain a recorded decision: the attempt's identity, tool and the facts it was decided on, from the audit trail")
	dbPath := fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's database: with --args, the usage counters of limits over time are read from it as the guard would count them now (when the default does not exist, they are 0 and a usage: line says so); with --action, the audit trail (env MANDATE_DB)")
	agent := fs.String("agent", "", "the identity that calls (required)")
	tool := fs.String("tool", "", "the tool it calls (required)")
	argsJSON := fs.String("args", "", "the call's arguments as a JSON object; facts are read from --store as the guard reads them")
	attrsJSON := fs.String("attrs", "", "attribute values as a JSON object: alone, all of them; with --args, they replace the facts read (e.g. a usage counter)")
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "embedded store to read facts from with --args; must exist (mandate store import or a first mandate serve creates it) (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *actionID != "" {
		return explainRecorded(ctx, *actionID, *dbPath, &pf, stdout)
	}
	// The counters come from the database the guard here would count in:
	// a --db or MANDATE_DB given must exist; the default mandate.db is read
	// when it exists, as --action and every other command read it. Either
	// way a usage: line names the database, or says the counters are zero.
	_, dbGiven := os.LookupEnv("MANDATE_DB")
	fs.Visit(func(f *flag.Flag) { dbGiven = dbGiven || f.Name == "db" })
	useDB := dbGiven
	if _, err := os.Stat(*dbPath); err == nil {
		useDB = true
	}
	if *agent == "" || *tool == "" || (*argsJSON == "" && *attrsJSON == "") {
		return usageError{"policy explain: --agent, --tool and --args (or --attrs) are required, or --action ID"}
	}
	p, err := pf.load()
	if err != nil {
		return err
	}
	var override map[string]any
	if *attrsJSON != "" {
		if err := json.Unmarshal([]byte(*attrsJSON), &override); err != nil || override == nil {
			return usageError{fmt.Sprintf("policy explain: --attrs must be a JSON object: %v", err)}
		}
	}
	attrs := override
	if *argsJSON != "" {
		var callArgs map[string]any
		// Numbers keep their text, as the guard reads them: 30 is "30.00",
		// 30.000000000000001 an error, never a float64 rounded.
		dec := json.NewDecoder(strings.NewReader(*argsJSON))
		dec.UseNumber()
		if err := dec.Decode(&callArgs); err != nil || callArgs == nil {
			return usageError{fmt.Sprintf("policy explain: --args must be a JSON object: %v", err)}
		}
		st, be, _, err := openBackend(ctx, *backendFile, *storePath, true)
		if err != nil {
			return fmt.Errorf("policy explain: %w (or give only --attrs)", err)
		}
		defer st.Close()
		d := &tools.Deps{Agent: *agent, Backend: be, Rates: rates.NewLive(pf.ratesTable)}
		if useDB {
			db, err := openExistingDB(ctx, *dbPath)
			if err != nil {
				return err
			}
			defer db.Close()
			d.DB = db
		}
		attrs, err = tools.Facts(ctx, d, *tool, callArgs)
		if err != nil {
			// The guard denies when facts cannot be read; say so plainly.
			fmt.Fprintf(stdout, "decision: %s\nwhy:      facts could not be loaded: %s\n", policy.Deny, mandate.ErrorMessage(err))
			return nil
		}
		for k, v := range override {
			attrs[k] = v
		}
		fmt.Fprint(stdout, p.Explain(policy.Request{Agent: *agent, Tool: *tool, Attrs: attrs}))
		fmt.Fprint(stdout, explainSources(attrs, override, useDB, *dbPath, *agent))
		return nil
	}
	fmt.Fprint(stdout, p.Explain(policy.Request{Agent: *agent, Tool: *tool, Attrs: attrs}))
	if slices.ContainsFunc(usageNames, func(n string) bool { return slices.Contains(policy.Tools[*tool].Attrs, n) }) {
		fmt.Fprint(stdout, "usage:    as given by --attrs: without --args nothing is read from the store or counted in a database\n")
	}
	return nil
}

// usageNames are the attributes of limits over time, in the order explain
// lists them.
var usageNames = []string{policy.AttrAgentRefunded24h, policy.AttrAgentRefunds24h, policy.AttrCustomerRefunds30d, policy.AttrAgentCancellations1h}

// explainSources says where the facts of a dry run that are not read from
// the store came from: the usage counters (the database, or zero) and the
// exchange rate, so an explanation never passes zeros off as real usage.
func explainSources(attrs, override map[string]any, counted bool, dbPath, agent string) string {
	var b strings.Builder
	var read, set []string
	for _, n := range usageNames {
		v, ok := attrs[n]
		if !ok {
			continue
		}
		if _, byHand := override[n]; byHand {
			set = append(set, n)
			continue
		}
		read = append(read, fmt.Sprintf("%s = %v", n, v))
	}
	if len(read) > 0 {
		if counted {
			fmt.Fprintf(&b, "usage:    counted in %s now, as the guard would count this call by %s: %s\n", storage.Redact(dbPath), agent, strings.Join(read, ", "))
		} else {
			fmt.Fprintf(&b, "usage:    zero, not counted: no database at %s, and a dry run records nothing, so %s are as for a first call; give --db for the real counters, or set them with --attrs\n", storage.Redact(dbPath), strings.Join(read, ", "))
		}
	}
	if len(set) > 0 {
		fmt.Fprintf(&b, "usage:    set by --attrs, not counted: %s\n", strings.Join(set, ", "))
	}
	if r, ok := attrs[policy.FactRate]; ok {
		fmt.Fprintf(&b, "rates:    1 %v = %v %v (rates version %v)\n", attrs[policy.AttrCurrency], r, attrs[policy.FactBaseCurrency], attrs[policy.FactRatesVersion])
	}
	return b.String()
}

// explainRecorded explains a past decision from its attempt record: the
// identity, tool and the attribute values it was decided on, under the
// policy loaded now, saying whether that is the policy that decided then.
func explainRecorded(ctx context.Context, id, dbPath string, pf *policyFlags, stdout io.Writer) error {
	db, err := openExistingDB(ctx, dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var rec *storage.Record
	err = db.Records(ctx, storage.Filter{ActionID: id}, func(r *storage.Record) error {
		if r.Phase == storage.PhaseAttempt && rec == nil {
			rec = r
		}
		return nil
	})
	if err != nil {
		return err
	}
	if rec == nil {
		return fmt.Errorf("policy explain: no attempt recorded for action %q in %s", id, storage.Redact(dbPath))
	}
	p, err := pf.load()
	if err != nil {
		return err
	}
	var attrs map[string]any
	if len(rec.Attrs) > 0 {
		if err := json.Unmarshal(rec.Attrs, &attrs); err != nil {
			return fmt.Errorf("policy explain: the recorded facts of %s cannot be read: %w", id, err)
		}
	}
	fmt.Fprintf(stdout, "recorded: %s %s by %s at %s: %s (%s), policy version %s\n",
		rec.ActionID, rec.Tool, rec.Agent, rec.Time.UTC().Format(time.RFC3339), rec.Decision, rec.Rule, rec.PolicyVersion)
	if rec.PolicyVersion != p.Version {
		fmt.Fprintf(stdout, "note:     the policy loaded now is version %s, not the one that decided; below is what it says about the same facts\n", p.Version)
	}
	if tools.RefusedBeforeRules(rec.Rule) {
		fmt.Fprintf(stdout, "note:     the guard refused this call before the rules were consulted (%s); below is what the rules say about its facts\n", rec.Rule)
	}
	tool := tools.RecordedPolicyTool(rec.Tool, attrs)
	if tool != rec.Tool {
		fmt.Fprintf(stdout, "note:     a person's revert, decided as %s\n", tool)
	}
	fmt.Fprint(stdout, p.Explain(policy.Request{Agent: rec.Agent, Tool: tool, Attrs: attrs}))
	return nil
}

func backendOf(st *store.Store) backend.Backend {
	return backend.Backend{Payments: st, Orders: st, Customers: st}
}

func runPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy test", "mandate policy test [--model F] [--policy F] [--store F] CASES.yaml", stderr)
	storePath := fs.String("store", "", "read facts from this existing store instead of the one the cases file names (its store: key, demo or a data file)")
	verbose := fs.Bool("v", false, "print every case, not only failures")
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"policy test: name one cases file"}
	}
	file := fs.Arg(0)
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	cf, err := policy.LoadCases(file, data)
	if err != nil {
		return err
	}
	p, err := pf.load()
	if err != nil {
		return err
	}
	facts, closeStore, err := caseFacts(ctx, cf, file, *storePath, pf.ratesTable)
	if err != nil {
		return err
	}
	defer closeStore()
	results := policy.RunCases(p, cf.Cases, facts)
	failed := 0
	for _, r := range results {
		if !r.Pass {
			failed++
			fmt.Fprint(stdout, r.Diff(file))
		} else if *verbose {
			fmt.Fprintf(stdout, "ok   %s:%d: %s: %s\n", file, r.Case.Line, r.Case.Name, r.Got.Effect)
		}
	}
	fmt.Fprintf(stdout, "%s: %d cases, %d passed, %d failed (policy version %s)\n", file, len(results), len(results)-failed, failed, p.Version)
	if failed > 0 {
		return fmt.Errorf("policy test: %d of %d cases failed", failed, len(results))
	}
	return nil
}

// caseFacts opens the store a case file names: an existing store given
// with --store, the demo data ("demo"), or a data file relative to the case
// file, each of the last two seeded into a throwaway store rebased to now.
func caseFacts(ctx context.Context, cf *policy.CaseFile, file, storePath string, rt *rates.Table) (policy.FactsFunc, func(), error) {
	var st *store.Store
	var err error
	cleanup := func() {}
	switch {
	case storePath != "":
		if _, err := os.Stat(storePath); err != nil {
			return nil, nil, fmt.Errorf("policy test: no store at %s: %w", storePath, err)
		}
		st, err = store.Open(storePath)
	case cf.Store == "":
		return nil, cleanup, nil
	default:
		data := store.DemoData
		if cf.Store != "demo" {
			path := cf.Store
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(file), path)
			}
			if data, err = os.ReadFile(path); err != nil {
				return nil, nil, fmt.Errorf("%s: store: %w", file, err)
			}
		}
		dir, err := os.MkdirTemp("", "mandate-policy-test-")
		if err != nil {
			return nil, nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		if st, err = store.Open(filepath.Join(dir, "store.db")); err != nil {
			cleanup()
			return nil, nil, err
		}
		if _, err := st.Seed(ctx, data); err != nil {
			st.Close()
			cleanup()
			return nil, nil, fmt.Errorf("%s: store %s: %s", file, cf.Store, mandate.ErrorMessage(err))
		}
	}
	if err != nil {
		return nil, nil, err
	}
	d := &tools.Deps{Backend: backendOf(st), Rates: rates.NewLive(rt)}
	facts := func(tool string, args map[string]any) (map[string]any, error) {
		return tools.Facts(ctx, d, tool, args)
	}
	return facts, func() { st.Close(); cleanup() }, nil
}

// parseWindow reads policy replay's --since: a positive duration or whole
// days (parseDays), or 0 for the whole trail.
func parseWindow(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil && d == 0 {
		return 0, nil
	}
	d, err := parseDays(s)
	if err != nil {
		return 0, fmt.Errorf("%q: give a positive duration such as 90m or 24h, whole days such as 7d, or 0 for the whole trail", s)
	}
	return d, nil
}

// transition names a change of decision for the replay summary.
type transition struct{ from, to string }

// replayOrder is how the summary lists transitions.
var replayOrder = []transition{
	{policy.Allow, policy.Deny}, {policy.Deny, policy.Allow},
	{policy.Allow, policy.RequireApproval}, {policy.RequireApproval, policy.Allow},
	{policy.Deny, policy.RequireApproval}, {policy.RequireApproval, policy.Deny},
}

func runPolicyReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy replay", "mandate policy replay --policy CANDIDATE [--db F] [--model F] [--since 24h]", stderr)
	dbPath := fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's database with the audit trail (env MANDATE_DB)")
	sinceArg := fs.String("since", "24h", "replay the attempts of this long ago until now: a duration such as 90m or 24h, or whole days such as 7d; 0 replays the whole trail")
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if pf.policy == "" {
		return usageError{"policy replay: name the candidate with --policy FILE"}
	}
	since, err := parseWindow(*sinceArg)
	if err != nil {
		return usageError{"policy replay: --since " + err.Error()}
	}
	candidate, err := pf.load()
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var f storage.Filter
	if since > 0 {
		f.Since = time.Now().Add(-since)
	}
	counts := map[transition]int{}
	var total, unchanged, skipped int
	var flipped []string
	// What replay cannot re-simulate: the facts that are only as recorded.
	missing, usageSeen, converted := map[string]int{}, map[string]bool{}, 0
	err = db.Records(ctx, f, func(r *storage.Record) error {
		if r.Phase != storage.PhaseAttempt {
			return nil
		}
		total++
		// The guard refused these before the rules saw them; their attrs are
		// empty, so re-deciding them would say nothing about the candidate.
		// So were these, by the guard's own checks (the pending cap, a
		// policy that was not live), and sign-ins are no tool calls.
		// So were calls of a suspended agent.
		if tools.RefusedBeforeRules(r.Rule) {
			skipped++
			return nil
		}
		if _, ok := policy.Tools[r.Tool]; !ok {
			total--
			return nil
		}
		attrs := map[string]any{}
		if len(r.Attrs) > 0 {
			if err := json.Unmarshal(r.Attrs, &attrs); err != nil {
				return fmt.Errorf("audit record %d: attrs: %w", r.Seq, err)
			}
		}
		for _, n := range policy.Tools[r.Tool].Attrs {
			if _, ok := attrs[n]; !ok {
				missing[n]++
			}
		}
		for _, n := range usageNames {
			if _, ok := attrs[n]; ok {
				usageSeen[n] = true
			}
		}
		if _, ok := attrs[policy.FactRate]; ok {
			converted++
		}
		// A person's revert was decided as revert_update_account.
		dec := candidate.Decide(policy.Request{Agent: r.Agent, Tool: tools.RecordedPolicyTool(r.Tool, attrs), Attrs: attrs})
		if dec.Effect == r.Decision {
			unchanged++
			return nil
		}
		counts[transition{r.Decision, dec.Effect}]++
		flipped = append(flipped, fmt.Sprintf("  #%d %s %s %s %s\n      was %s by %s (policy %s)\n      now %s by %s\n",
			r.Seq, r.Time.UTC().Format(time.RFC3339), r.Agent, r.Tool, r.Args, r.Decision, r.Rule, r.PolicyVersion, dec.Effect, dec.RuleText()))
		return nil
	})
	if err != nil {
		return err
	}
	window := "of the whole trail"
	if since > 0 {
		window = "of the last " + since.String()
	}
	fmt.Fprintf(stdout, "replayed %d attempts %s in %s under %s (version %s)\n", total, window, storage.Redact(*dbPath), pf.policy, candidate.Version)
	fmt.Fprintf(stdout, "  %-28s %d\n", "unchanged", unchanged)
	for _, t := range replayOrder {
		fmt.Fprintf(stdout, "  %-28s %d\n", t.from+" -> "+t.to, counts[t])
	}
	if skipped > 0 {
		fmt.Fprintf(stdout, "  %-28s %d (refused before the rules: no identity, facts not loaded, the pending cap, a policy that was not live, or a suspension)\n", "not replayed", skipped)
	}
	fmt.Fprint(stdout, replayCaveats(missing, usageSeen, converted))
	if len(flipped) > 0 {
		fmt.Fprintf(stdout, "\n%d would change:\n", len(flipped))
		for _, s := range flipped {
			fmt.Fprint(stdout, s)
		}
	}
	return nil
}

// replayCaveats says which facts replay took as recorded rather than
// re-simulating them, so a reader does not mistake a replay for a rerun.
func replayCaveats(missing map[string]int, usageSeen map[string]bool, converted int) string {
	var b strings.Builder
	var used []string
	for _, n := range usageNames {
		if usageSeen[n] {
			used = append(used, n)
		}
	}
	if len(used) > 0 || converted > 0 || len(missing) > 0 {
		fmt.Fprintf(&b, "\nnot re-simulated:\n")
	}
	if len(used) > 0 {
		fmt.Fprintf(&b, "  usage counters (%s) are as recorded at the time: had the candidate decided differently, later counters would differ\n", strings.Join(used, ", "))
	}
	if converted > 0 {
		fmt.Fprintf(&b, "  base-currency amounts (%s, %s) in %d attempts are as converted then, with the rate and rates_version recorded, not with today's rates\n", policy.AttrAmountBase, policy.AttrOrderTotalBase, converted)
	}
	names := make([]string, 0, len(missing))
	for n := range missing {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %s was not recorded in %d attempts (decided before it existed): a candidate rule that tests it fails to evaluate on them, and that is a deny\n", n, missing[n])
	}
	return b.String()
}
