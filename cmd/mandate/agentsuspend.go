package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

const agentSuspendUsage = `  mandate agent suspend NAME --as ADMIN --reason TEXT [--actions-only] [--token-file FILE] [--db FILE]
      stop agent NAME on every server sharing the database, at once: its actions (and its lookups,
      unless --actions-only) are refused and its pending actions cannot be approved until resumed
  mandate agent resume NAME --as ADMIN [--token-file FILE] [--db FILE]
      lift NAME's suspension
  mandate agent suspensions [--all] [--db FILE]
      the agents suspended now (--all: every suspension ever, newest first)
`

// runAgentSuspend runs `mandate agent suspend|resume|suspensions`.
func runAgentSuspend(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	switch cmd {
	case "suspend":
		return runSuspendResume(ctx, true, args, stdout, stderr)
	case "resume":
		return runSuspendResume(ctx, false, args, stdout, stderr)
	}
	return runSuspensions(ctx, args, stdout, stderr)
}

func runSuspendResume(ctx context.Context, suspend bool, args []string, stdout, stderr io.Writer) error {
	name, synopsis := "agent resume", "mandate agent resume NAME --as ADMIN [--token-file FILE] [--audit-key FILE] [--db FILE]"
	if suspend {
		name, synopsis = "agent suspend", "mandate agent suspend NAME --as ADMIN --reason TEXT [--actions-only] [--token-file FILE] [--audit-key FILE] [--db FILE]"
	}
	fs := newFlags(name, synopsis, stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs) // suspending is recorded: a keyed trail needs the key
	as := fs.String("as", env("MANDATE_APPROVER", ""), "your identity, as named in policy.csv (env MANDATE_APPROVER); required with a password")
	tokenFile := fs.String("token-file", "", "a file holding your token from mandate admin user token (or set MANDATE_APPROVER_TOKEN); else your password is asked for (or MANDATE_ADMIN_PASSWORD)")
	var reason *string
	var actionsOnly *bool
	if suspend {
		reason = fs.String("reason", "", "why, for the audit trail and the other administrators (required; the agent is not shown it)")
		actionsOnly = fs.Bool("actions-only", false, "refuse the agent's actions but keep answering its lookups")
	}
	var pf policyFlags
	pf.register(fs)
	agent, err := parseOne(fs, args, "agent to "+strings.TrimPrefix(name, "agent ")+", e.g. demo-agent")
	if err != nil {
		return err
	}
	if suspend && strings.TrimSpace(*reason) == "" {
		return usageError{name + ": say why with --reason TEXT; it is audited"}
	}
	cred, err := readApproverCredentials(*tokenFile, stderr)
	if err != nil {
		return err
	}
	if *as == "" && cred.token == "" {
		return usageError{name + ": say who you are with --as NAME (and your password), or give your token with --token-file or MANDATE_APPROVER_TOKEN"}
	}
	deps, err := openPersonDeps(ctx, *dbPath, *auditKey, &pf, stderr)
	if err != nil {
		return err
	}
	defer deps.DB.Close()
	who, err := authenticatePerson(ctx, deps, *as, cred)
	if err != nil {
		return fmt.Errorf("%s %s: %s", name, agent, mandate.ErrorMessage(err))
	}
	if !suspend {
		s, err := tools.Resume(ctx, deps, who, agent)
		if err != nil {
			return fmt.Errorf("%s %s: %s", name, agent, mandate.ErrorMessage(err))
		}
		fmt.Fprintf(stdout, "resumed %s (suspension %d) by %s at %s\n", agent, s.ID, who, s.ResumedAt.UTC().Format(time.RFC3339))
		return nil
	}
	s, err := tools.Suspend(ctx, deps, who, agent, *reason, *actionsOnly)
	if err != nil {
		return fmt.Errorf("%s %s: %s", name, agent, mandate.ErrorMessage(err))
	}
	fmt.Fprintf(stdout, "suspended %s (suspension %d: %s refused) by %s at %s; every server sharing %s refuses it now\n",
		agent, s.ID, s.Scope(), who, s.SuspendedAt.UTC().Format(time.RFC3339), *dbPath)
	return nil
}

// openPersonDeps opens what a person's act needs without a backend: the
// policy this process holds (which must be the live one to act), the
// database and a logger.
func openPersonDeps(ctx context.Context, dbPath, auditKey string, pf *policyFlags, stderr io.Writer) (*tools.Deps, error) {
	pol, err := pf.load()
	if err != nil {
		return nil, err
	}
	log, err := newLogger(stderr, "warn", "text")
	if err != nil {
		return nil, err
	}
	db, err := openExistingDB(ctx, dbPath, storage.AuditKeyFile(auditKey))
	if err != nil {
		return nil, err
	}
	if err := db.CheckWriteKey(ctx); err != nil {
		db.Close()
		return nil, err
	}
	modelFile, policyFile := pf.files()
	return &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Logger: log, ModelFile: modelFile, PolicyFile: policyFile,
		Rates: rates.NewLive(pf.ratesTable)}, nil
}

// authenticatePerson proves who is at the keyboard, with the approvals
// CLI's credentials, backoff and audit of failures, and returns the name
// to act as. Any person the live policy gives a role (approver or
// auditor) may sign in; what they may then do is the policy's to say
// (suspend_agent, resume_agent, revert_update_account).
func authenticatePerson(ctx context.Context, deps *tools.Deps, as string, c approverCredentials) (string, error) {
	a := &auth.Authenticator{DB: deps.DB, Policy: livePolicyEngine(ctx, deps), Logger: deps.Logger}
	id, err := signInCLI(ctx, a, as, c, "this command")
	if err != nil {
		return "", err
	}
	return id.Name, nil
}

func runSuspensions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent suspensions", "mandate agent suspensions [--all] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	all := fs.Bool("all", false, "every suspension, lifted ones too, newest first (the last 100)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var list []*storage.Suspension
	if *all {
		list, err = db.Suspensions(ctx, "", 100)
	} else {
		list, err = db.ActiveSuspensions(ctx)
	}
	if err != nil {
		return err
	}
	if len(list) == 0 {
		if *all {
			fmt.Fprintln(stdout, "no agent was ever suspended")
		} else {
			fmt.Fprintln(stdout, "no agent is suspended")
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGENT\tREFUSES\tSUSPENDED BY\tAT\tRESUMED BY\tAT\tREASON")
	for _, s := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, oneLine(s.Agent, 40), s.Scope(), oneLine(s.SuspendedBy, 40),
			s.SuspendedAt.UTC().Format(time.RFC3339), orDashS(s.ResumedBy), orDash(s.ResumedAt), oneLine(s.Reason, 80))
	}
	return tw.Flush()
}

func orDashS(s string) string {
	if s == "" {
		return "-"
	}
	return oneLine(s, 40)
}
