package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"golang.org/x/term"
)

const approvalsUsage = `Usage:
  mandate approvals list [--status pending] [--db FILE]
  mandate approvals show ID [--db FILE]
  mandate approvals approve ID --as NAME [--comment TEXT] [--token-file FILE]
  mandate approvals deny ID --as NAME --comment TEXT [--token-file FILE]
Run 'mandate approvals SUBCOMMAND -h' for its flags.
`

func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("approvals", approvalsUsage, args, stdout, stderr); done {
		return err
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
	return unknownSubcommand("approvals", approvalsUsage, args[0], stderr)
}

func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's database: a SQLite file, or a postgres:// URL (env MANDATE_DB)")
}

// parseWithID parses flags that may come before or after one positional
// action id: `approve act_1 --as alice` and `approve --as alice act_1`.
func parseWithID(fs *flag.FlagSet, args []string) (string, error) {
	return parseOne(fs, args, "action id, e.g. act_3f2a…")
}

// listStatuses are the values of approvals list --status: every action
// status, and all.
var listStatuses = []string{storage.StatusPending, storage.StatusApproved, storage.StatusDenied, storage.StatusExpired,
	storage.StatusExecuting, storage.StatusExecuted, storage.StatusFailed, "all"}

func runApprovalsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("approvals list", "mandate approvals list [--status pending] [--agent NAME] [--limit N] [--after ID | --offset N] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs) // listing expires what is due, which is recorded
	status := fs.String("status", storage.StatusPending, oneOf(listStatuses))
	agent := fs.String("agent", "", "only the actions this agent asked for")
	limit := fs.Int("limit", storage.DefaultPage, fmt.Sprintf("how many to print, 1 to %d; the last line says how many more there are", storage.MaxPage))
	after := fs.String("after", "", "pending only: print the page after this action id (the list says which)")
	offset := fs.Int("offset", 0, "other statuses: skip this many of the newest first")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if !slices.Contains(listStatuses, *status) {
		return usageError{fmt.Sprintf("approvals list: --status %q: use %s", *status, oneOf(listStatuses))}
	}
	if *limit < 1 || *limit > storage.MaxPage {
		return usageError{fmt.Sprintf("approvals list: --limit %d: print 1 to %d at a time and page with --after or --offset", *limit, storage.MaxPage)}
	}
	if *offset < 0 {
		return usageError{"approvals list: --offset must not be negative"}
	}
	if *after != "" && *status != storage.StatusPending {
		return usageError{"approvals list: --after pages pending actions; use --offset for other statuses"}
	}
	db, err := openExistingDB(ctx, *dbPath, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now()
	if _, err := db.ExpirePending(ctx, now); err != nil {
		return err
	}
	// Pending actions come soonest to expire first, in pages keyed by the
	// last one shown, like the web queue; the history newest first.
	var acts []*storage.Action
	var total, before int
	var next string
	if *status == storage.StatusPending {
		p, err := db.Pending(ctx, storage.PendingFilter{Agent: *agent, After: *after, Limit: *limit})
		if err != nil {
			return err
		}
		acts, total, before, next = p.Actions, p.Total, p.Before, p.Next
	} else {
		f := storage.ActionFilter{Status: *status, Agent: *agent, Limit: *limit, Offset: *offset}
		if f.Status == "all" {
			f.Status = ""
		}
		if acts, err = db.Actions(ctx, f); err != nil {
			return err
		}
		if total, err = db.CountActions(ctx, f); err != nil {
			return err
		}
		before = *offset
	}
	if len(acts) == 0 {
		what := *status
		if *agent != "" {
			what += " from " + oneLine(*agent, 60)
		}
		if total > 0 {
			fmt.Fprintf(stdout, "no more %s actions: there are %d\n", what, total)
		} else {
			fmt.Fprintf(stdout, "no %s actions\n", what)
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tAGENT\tTOOL\tARGS\tCREATED\tEXPIRES IN\tHELD")
	held := map[string]string{} // agent -> why its pending actions are held
	for _, a := range acts {
		left, mark := "-", "-"
		if a.Status == storage.StatusPending {
			left = a.ExpiresAt.Sub(now).Round(time.Minute).String()
			why, seen := held[a.Agent]
			if !seen {
				if why, err = heldBy(ctx, db, a.Agent); err != nil {
					return err
				}
				held[a.Agent] = why
			}
			if why != "" {
				mark = "held: agent suspended"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", oneLine(a.ID, 40), a.Status, oneLine(a.Agent, 40), oneLine(a.Tool, 40), oneLine(argsSummary(a.Args), 80),
			a.CreatedAt.UTC().Format("2006-01-02 15:04"), left, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, why := range held {
		if why != "" {
			defer fmt.Fprintf(stdout, "%s\n", why) // after the count line
		}
	}
	// Never a silent cut: say how many there are and how to see the rest.
	shown := before + len(acts)
	fmt.Fprintf(stdout, "%d–%d of %d", before+1, shown, total)
	if rest := total - shown; rest > 0 {
		again := "mandate approvals list"
		if *status != storage.StatusPending {
			again += " --status " + *status
		}
		if *agent != "" {
			again += " --agent " + *agent
		}
		if *limit != storage.DefaultPage {
			again += " --limit " + strconv.Itoa(*limit)
		}
		if next != "" {
			again += " --after " + next
		} else {
			again += " --offset " + strconv.Itoa(shown)
		}
		fmt.Fprintf(stdout, "; %d more: %s", rest, oneLine(again, 200))
	}
	fmt.Fprintln(stdout)
	return nil
}

// oneOf lists choices for a person: "a, b or c".
func oneOf(choices []string) string {
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
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

func openApprovalDeps(ctx context.Context, dbPath, storePath, backendFile string, pf *policyFlags, stderr io.Writer, opts ...storage.Option) (*approvalDeps, error) {
	// An approved action runs here, not in serve: its backend calls must
	// be bounded like serve's, or a serve's recovery (which waits
	// --recover-after, more than twice its own backend timeout) could
	// reconcile a call of ours still in flight as not done. The same
	// environment variable sets both; the default is serve's.
	backendTimeout := 10 * time.Second
	if s, ok := os.LookupEnv("MANDATE_BACKEND_TIMEOUT"); ok {
		d, err := parsePositive(s)
		if err != nil {
			return nil, usageError{fmt.Sprintf("MANDATE_BACKEND_TIMEOUT=%q: %v", s, err)}
		}
		backendTimeout = d
	}
	pol, err := pf.load()
	if err != nil {
		return nil, err
	}
	db, err := openExistingDB(ctx, dbPath, opts...)
	if err != nil {
		return nil, err
	}
	if err := db.CheckWriteKey(ctx); err != nil { // deciding is recorded: a keyed trail needs the key
		db.Close()
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
	// The CLI records no policy: it only acts if the one it loaded is the
	// live one that a server recorded (checked in tools.Approve and Deny).
	modelFile, policyFile := pf.files()
	return &approvalDeps{st: st, deps: &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Backend: be, Logger: log,
		BackendTimeout: backendTimeout, ModelFile: modelFile, PolicyFile: policyFile, Rates: rates.NewLive(pf.ratesTable)}}, nil
}

func runApprovalsDecide(ctx context.Context, args []string, approve bool, stdout, stderr io.Writer) error {
	name, synopsis := "approvals approve", "mandate approvals approve ID --as NAME [--comment TEXT] [--token-file FILE] [--db FILE --store FILE]"
	if !approve {
		name, synopsis = "approvals deny", "mandate approvals deny ID --as NAME --comment TEXT [--token-file FILE] [--db FILE --store FILE]"
	}
	fs := newFlags(name, synopsis, stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs)
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "the store the action runs against (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	as := fs.String("as", env("MANDATE_APPROVER", ""), "your identity, as named in policy.csv (env MANDATE_APPROVER); required with a password")
	tokenFile := fs.String("token-file", "", "a file holding your token from mandate admin user token (or set MANDATE_APPROVER_TOKEN); else your password is asked for (or MANDATE_ADMIN_PASSWORD)")
	comment := fs.String("comment", "", "a note for the record; required to deny, and the agent passes it on")
	var pf policyFlags
	pf.register(fs)
	id, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	cred, err := readApproverCredentials(*tokenFile, stderr)
	if err != nil {
		return err
	}
	if *as == "" && cred.token == "" {
		return usageError{name + ": say who you are with --as NAME (and your password), or give your token with --token-file or MANDATE_APPROVER_TOKEN"}
	}
	if !approve && strings.TrimSpace(*comment) == "" {
		return usageError{name + ": give a reason with --comment; the agent passes it on to the customer"}
	}
	ad, err := openApprovalDeps(ctx, *dbPath, *storePath, *backendFile, &pf, stderr, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer ad.Close()
	approver, err := authenticateApprover(ctx, ad.deps, id, *as, cred)
	if err != nil {
		return fmt.Errorf("%s %s: %s", strings.TrimPrefix(name, "approvals "), id, mandate.ErrorMessage(err))
	}
	var act *storage.Action
	if approve {
		act, err = tools.Approve(ctx, ad.deps, id, approver, *comment)
	} else {
		act, err = tools.Deny(ctx, ad.deps, id, approver, *comment)
	}
	if err != nil {
		if act != nil {
			fmt.Fprintf(stdout, "%s: %s\n", act.ID, act.Status)
		}
		return fmt.Errorf("%s %s: %s", strings.TrimPrefix(name, "approvals "), id, mandate.ErrorMessage(err))
	}
	switch act.Status {
	case storage.StatusExecuted:
		fmt.Fprintf(stdout, "%s: approved by %s and executed: %s\n", act.ID, approver, act.Result)
	case storage.StatusFailed:
		fmt.Fprintf(stdout, "%s: approved by %s, but the system of record refused or failed: %s\n", act.ID, approver, act.Error)
		return fmt.Errorf("approve %s: the action failed", id)
	default:
		fmt.Fprintf(stdout, "%s: %s by %s\n", act.ID, act.Status, approver)
	}
	return nil
}

// approverCredentials is what the CLI approver offered: a token, or a
// password, or neither.
type approverCredentials struct {
	token, password string
	prompt          bool // the password must still be asked for on the terminal
}

// readApproverCredentials finds the approver's credentials: a token from
// MANDATE_APPROVER_TOKEN or --token-file, else a password from
// MANDATE_ADMIN_PASSWORD, else (on a terminal) a password prompt later.
func readApproverCredentials(tokenFile string, stderr io.Writer) (approverCredentials, error) {
	var c approverCredentials
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return c, fmt.Errorf("reading --token-file: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" {
			return c, usageError{"--token-file " + tokenFile + " is empty"}
		}
		return c, nil
	}
	if t := strings.TrimSpace(os.Getenv("MANDATE_APPROVER_TOKEN")); t != "" {
		c.token = t
		return c, nil
	}
	if p := os.Getenv("MANDATE_ADMIN_PASSWORD"); p != "" {
		c.password = p
		return c, nil
	}
	c.prompt = term.IsTerminal(int(os.Stdin.Fd()))
	return c, nil
}

// livePolicyEngine is the live policy as recorded in the database, or the
// process's own when none is recorded or it does not load (the decision
// then refuses as stale).
func livePolicyEngine(ctx context.Context, deps *tools.Deps) *policy.Engine {
	p, err := recordedPolicy(ctx, deps.DB)
	if err != nil || p == nil || p.Version == deps.Policy.Policy().Version {
		return deps.Policy
	}
	return policy.NewEngine(p)
}

// cliAddr is where a CLI sign-in comes from, for the audit trail and the
// backoff: "cli:" and the OS user running it, or "cli" when that is unknown.
func cliAddr() string {
	if u, err := user.Current(); err == nil {
		return "cli:" + u.Username
	}
	return "cli"
}

// authenticateApprover proves who is approving, with the same credentials,
// backoff and audit of failures as the admin page, and returns the name
// to decide as. Without credentials it refuses, and the refusal is
// audited, in the action's lineage: a name on the command line proves
// nothing, and the requester trying to approve its own action is a
// security event (it has no approver role, so it cannot sign in). An
// auditor who signs in is refused and audited the same way.
func authenticateApprover(ctx context.Context, deps *tools.Deps, actionID, as string, c approverCredentials) (string, error) {
	// Who may sign in is read from the live policy (the texts a server
	// recorded), never from the files this CLI was pointed at: with
	// --policy evil.csv nobody becomes an approver, and an approver stays
	// one. Deciding then refuses under a policy that is not live anyway.
	a := &auth.Authenticator{DB: deps.DB, Policy: livePolicyEngine(ctx, deps), Now: deps.Now, Logger: deps.Logger, ActionID: actionID}
	id, err := signInCLI(ctx, a, as, c, "approving from the CLI")
	if err != nil {
		return "", err
	}
	if id.Role != auth.Approver {
		// Signed in, but not as someone who may decide: audited like the
		// web page's refusal of an auditor, in the action's lineage.
		msg := fmt.Sprintf("%s is an %s and may not decide actions", id.Name, id.Role)
		if aerr := a.Refuse(ctx, id.Name, cliAddr(), "cli", auth.AccessTool, msg); aerr != nil {
			a.Logger.Error("auditing a refused approver failed", "user", id.Name, "action_id", actionID, "err", aerr)
			return "", mandate.Errorf(mandate.EUNAVAILABLE, "%s, and the refusal could not be recorded in the audit trail: %s", msg, mandate.ErrorMessage(aerr))
		}
		return "", mandate.Errorf(mandate.EDENIED, "%s", msg)
	}
	return id.Name, nil
}

// signInCLI signs a person in from the CLI with a token or a password
// (prompted, or MANDATE_ADMIN_PASSWORD), through the same checks, backoff
// and audit as the web page. A token of someone else than --as, or no
// credentials at all, is refused and audited; doing says what needs them.
func signInCLI(ctx context.Context, a *auth.Authenticator, as string, c approverCredentials, doing string) (auth.Identity, error) {
	addr := cliAddr()
	switch {
	case c.token != "":
		id, err := a.Token(ctx, c.token, addr, "cli")
		if err == nil && as != "" && as != id.Name {
			reason := fmt.Sprintf("token of %s used with --as %s", id.Name, as)
			if aerr := a.Refuse(ctx, as, addr, "cli", auth.LoginTool, reason); aerr != nil {
				return auth.Identity{}, aerr
			}
			return auth.Identity{}, mandate.Errorf(mandate.EDENIED, "the token belongs to %s, not %s", id.Name, as)
		}
		return id, err
	case c.password != "" || c.prompt:
		pw := c.password
		if c.prompt {
			var err error
			if pw, err = promptPassword(os.Stdin, os.Stderr, "Password for "+as+": "); err != nil {
				return auth.Identity{}, err
			}
		}
		return a.Password(ctx, as, pw, addr, "cli")
	default:
		reason := "no credentials: " + doing + " needs a password (prompt or MANDATE_ADMIN_PASSWORD) or a token (--token-file or MANDATE_APPROVER_TOKEN)"
		if aerr := a.Refuse(ctx, as, addr, "cli", auth.LoginTool, reason); aerr != nil {
			return auth.Identity{}, aerr
		}
		return auth.Identity{}, mandate.Errorf(mandate.EDENIED, "%s", reason)
	}
}

// heldBy says why an agent's pending actions are held, "" if they are
// not: its suspension stops their approval until it is resumed, so a
// person reading the queue knows approving will be refused.
func heldBy(ctx context.Context, db *storage.DB, agent string) (string, error) {
	s, err := db.ActiveSuspension(ctx, agent)
	if err != nil || s == nil {
		return "", err
	}
	return fmt.Sprintf("held: agent suspended (suspension %d by %s at %s); approving is refused until `mandate agent resume %s`, denying works",
		s.ID, oneLine(s.SuspendedBy, 40), s.SuspendedAt.UTC().Format("2006-01-02 15:04"), oneLine(agent, 40)), nil
}
