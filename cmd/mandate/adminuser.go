package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"golang.org/x/term"
)

const adminUserUsage = `Usage:
  mandate admin user add NAME [--db FILE]
      add an approver or auditor; the password comes from a prompt, the first line of stdin, or MANDATE_ADMIN_PASSWORD
  mandate admin user list [--db FILE]       every user: role under the live policy, created, CLI token, open sessions
  mandate admin user remove NAME            remove a user and end their sessions
  mandate admin user passwd NAME [--audit-key FILE]
                                            set a new password; end their sessions and CLI token
  mandate admin user sessions NAME [--revoke]
                                            list (or end) a user's sessions
  mandate admin user token NAME [--audit-key FILE]
                                            create a token for the approvals CLI, printed once
  A forgotten password has no reset: remove NAME, then add NAME again with a new one;
  that ends their sessions and CLI token, and leaves what the policy lets them approve.
  passwd and token first check NAME's current password; a failed check is an audit record,
  so on a keyed trail they need the audit key (--audit-key FILE or MANDATE_AUDIT_KEY)
`

// runAdminUser manages the people who may sign in to the admin page and
// decide with the approvals CLI.
func runAdminUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if done, err := groupUsage("admin user", adminUserUsage, args, stdout, stderr); done {
		return err
	}
	switch args[0] {
	case "add":
		return runAdminUserAdd(ctx, args[1:], stdin, stdout, stderr)
	case "list":
		return runAdminUserList(ctx, args[1:], stdout, stderr)
	case "remove":
		return runAdminUserRemove(ctx, args[1:], stdout, stderr)
	case "passwd":
		return runAdminUserPasswd(ctx, args[1:], stdin, stdout, stderr)
	case "sessions":
		return runAdminUserSessions(ctx, args[1:], stdout, stderr)
	case "token":
		return runAdminUserToken(ctx, args[1:], stdout, stderr)
	}
	return unknownSubcommand("admin user", adminUserUsage, args[0], stderr)
}

// runAdminUserAdd adds an approver or auditor. The name must be an
// identity the live policy gives an approver role (or auditor) and no
// agent tool, unmistakable for any other name in the policy; the password
// must pass auth.CheckPassword.
func runAdminUserAdd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("admin user add", "mandate admin user add NAME [--audit-key FILE] [--db FILE --policy FILE]   (password: prompt, first line of stdin, or MANDATE_ADMIN_PASSWORD)", stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs)
	var pf policyFlags
	pf.register(fs)
	name, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	db, err := storage.Open(ctx, *dbPath, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer db.Close()
	// The addition is an audit record: on a keyed trail, say so before a
	// password is asked for.
	if err := db.CheckWriteKey(ctx); err != nil {
		return fmt.Errorf("admin user add: %w", err)
	}
	pol, err := policyForUsers(ctx, db, &pf)
	if err != nil {
		return err
	}
	if err := auth.CheckUserName(pol, name); err != nil {
		return usageError{"admin user add: " + mandate.ErrorMessage(err)}
	}
	hash, err := newPassword(name, stdin, stderr)
	if err != nil {
		return err
	}
	if err := db.AddUser(ctx, name, hash); err != nil {
		return fmt.Errorf("admin user add: %w", err)
	}
	// What the live policy lets them do, read again on every request.
	switch role := auth.RoleOf(pol, name); role {
	case auth.Auditor:
		fmt.Fprintf(stdout, "added %s (%s) to %s; they may read the audit trail and approve nothing while the policy grants them the %s role, checked on every request\n",
			name, role, storage.Redact(*dbPath), auth.AuditorRole)
	default:
		fmt.Fprintf(stdout, "added %s (%s) to %s; what they may approve is set by the approve_* rules for %s in the policy, checked on every request\n",
			name, role, storage.Redact(*dbPath), name)
	}
	return nil
}

// newPassword reads a new password (MANDATE_ADMIN_PASSWORD, else a prompt
// without echo, twice, on a terminal, else the first line of stdin),
// checks it and returns its hash.
func newPassword(name string, stdin io.Reader, stderr io.Writer) (string, error) {
	password, ok := os.LookupEnv("MANDATE_ADMIN_PASSWORD")
	if !ok || password == "" {
		if f, isFile := stdin.(*os.File); isFile && term.IsTerminal(int(f.Fd())) {
			p1, err := promptPassword(f, stderr, "New password for "+name+": ")
			if err != nil {
				return "", err
			}
			p2, err := promptPassword(f, stderr, "Again: ")
			if err != nil {
				return "", err
			}
			if p1 != p2 {
				return "", usageError{"the two passwords differ"}
			}
			password = p1
		} else {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return "", err
			}
			password = strings.TrimRight(line, "\r\n")
		}
	}
	if err := auth.CheckPassword(name, password); err != nil {
		return "", usageError{mandate.ErrorMessage(err) + " (type it at the prompt, pipe it on stdin or set MANDATE_ADMIN_PASSWORD)"}
	}
	return auth.HashPassword(password)
}

// promptPassword reads a password from the terminal f without echo.
func promptPassword(f *os.File, stderr io.Writer, prompt string) (string, error) {
	fmt.Fprint(stderr, prompt)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}

// runAdminUserList lists the users with the role each holds under the
// live policy (roles are never stored with a user), whether they hold a
// CLI token and how many sessions they have open; never a hash or secret.
func runAdminUserList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin user list", "mandate admin user list [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	pol, which, _, err := livePolicyOrFiles(ctx, db, &pf)
	if err != nil {
		return fmt.Errorf("admin user list: %w", err)
	}
	users, err := db.Users(ctx)
	if err != nil {
		return fmt.Errorf("admin user list: %w", err)
	}
	if len(users) == 0 {
		fmt.Fprintln(stdout, "no users; add one with `mandate admin user add NAME`")
		return nil
	}
	fmt.Fprintf(stderr, "roles under %s\n", which)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tCLI TOKEN\tSESSIONS")
	for _, u := range users {
		role := auth.RoleOf(pol, u.Name).String()
		if role == auth.None.String() {
			role = "none (cannot sign in)"
		}
		token := "-"
		if u.Token {
			token = "set " + orDash(u.TokenCreatedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", mandate.Visible(u.Name, false), role, orDash(u.CreatedAt), token, u.Sessions)
	}
	return tw.Flush()
}

func runAdminUserRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin user remove", "mandate admin user remove NAME [--audit-key FILE] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs)
	name, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.CheckWriteKey(ctx); err != nil {
		return fmt.Errorf("admin user remove: %w", err)
	}
	if err := db.RemoveUser(ctx, name); err != nil {
		return fmt.Errorf("admin user remove: %s", mandate.ErrorMessage(err))
	}
	fmt.Fprintf(stdout, "removed %s: their sessions and token ended with them. Remove their g line from the policy too if they should no longer approve by any route.\n", name)
	return nil
}

func runAdminUserPasswd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("admin user passwd", "mandate admin user passwd NAME [--audit-key FILE] [--db FILE]   (current password: prompt or MANDATE_ADMIN_CURRENT_PASSWORD; new: prompt, first line of stdin, or MANDATE_ADMIN_PASSWORD)", stderr)
	db, name, err := openProvenUser(ctx, fs, args, stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	hash, err := newPassword(name, stdin, stderr)
	if err != nil {
		return err
	}
	if err := db.SetPassword(ctx, name, hash); err != nil {
		return fmt.Errorf("admin user passwd: %w", err)
	}
	fmt.Fprintf(stdout, "changed the password of %s and ended their sessions\n", name)
	return nil
}

func runAdminUserSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin user sessions", "mandate admin user sessions NAME [--revoke] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	revoke := fs.Bool("revoke", false, "end every session of the user now")
	name, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.User(ctx, name); err != nil {
		return fmt.Errorf("admin user sessions: %s", mandate.ErrorMessage(err))
	}
	if *revoke {
		n, err := db.RevokeSessions(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "ended %d session(s) of %s\n", n, name)
		return nil
	}
	ss, err := db.UserSessions(ctx, name)
	if err != nil {
		return err
	}
	if len(ss) == 0 {
		fmt.Fprintf(stdout, "%s has no live sessions\n", name)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tLAST SEEN\tEXPIRES")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.CreatedAt.UTC().Format(time.RFC3339), s.LastSeen.UTC().Format(time.RFC3339), s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// runAdminUserToken makes a new CLI token for the user, replacing any
// earlier one, and prints it once: only its hash is stored.
func runAdminUserToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin user token", "mandate admin user token NAME [--audit-key FILE] [--db FILE]   (NAME's password: prompt or MANDATE_ADMIN_CURRENT_PASSWORD)", stderr)
	db, name, err := openProvenUser(ctx, fs, args, stderr)
	if err != nil {
		return err
	}
	defer db.Close()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	token := "mdt_" + hex.EncodeToString(b[:])
	if err := db.SetToken(ctx, name, token); err != nil {
		return fmt.Errorf("admin user token: %s", mandate.ErrorMessage(err))
	}
	fmt.Fprintln(stdout, token)
	fmt.Fprintf(stderr, "This is %s's approvals CLI token; it is shown only now and replaces any earlier one.\n"+
		"Keep it in a file only they can read and pass it with --token-file FILE or MANDATE_APPROVER_TOKEN.\n", name)
	return nil
}

// openProvenUser parses the flags of `admin user passwd|token NAME`, opens
// the database and has the caller prove they are NAME (proveUser). The
// sign-in's failures and refusals are audit records, so on a keyed trail
// these commands need the audit key, and say so before any password is
// asked for or checked.
func openProvenUser(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer) (*storage.DB, string, error) {
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs)
	var pf policyFlags
	pf.register(fs)
	name, err := parseWithID(fs, args)
	if err != nil {
		return nil, "", err
	}
	db, err := openExistingDB(ctx, *dbPath, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return nil, "", err
	}
	if err := db.CheckWriteKey(ctx); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("%s: %w", fs.Name(), err)
	}
	_, err = db.User(ctx, name)
	if err == nil {
		err = proveUser(ctx, db, &pf, name, stderr)
	}
	if err != nil {
		db.Close()
		return nil, "", fmt.Errorf("%s: %s", fs.Name(), mandate.ErrorMessage(err))
	}
	return db, name, nil
}

// proveUser makes whoever runs `admin user passwd` or `admin user token`
// prove they are name, with name's current password (a prompt, or
// MANDATE_ADMIN_CURRENT_PASSWORD), through the same sign-in as the admin
// page: backoff, the hashing cap, failures audited, and name must still
// hold an approver or auditor role in the policy. Without it, anyone who
// can run the CLI could mint a token or set a password and approve as
// name. (Whoever can write mandate.db directly is past any check the CLI
// makes: see the README's trust boundary.)
func proveUser(ctx context.Context, db *storage.DB, pf *policyFlags, name string, stderr io.Writer) error {
	pol, err := policyForUsers(ctx, db, pf)
	if err != nil {
		return err
	}
	pw, ok := os.LookupEnv("MANDATE_ADMIN_CURRENT_PASSWORD")
	if !ok {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return mandate.Errorf(mandate.EDENIED, "prove you are %s: type their current password at the prompt (run it in a terminal) or set MANDATE_ADMIN_CURRENT_PASSWORD", name)
		}
		if pw, err = promptPassword(os.Stdin, stderr, "Current password for "+name+": "); err != nil {
			return err
		}
	}
	addr := cliAddr()
	a := &auth.Authenticator{DB: db, Policy: policy.NewEngine(pol), Logger: slog.New(slog.DiscardHandler)}
	_, err = a.Password(ctx, name, pw, addr, "cli")
	return err
}

// policyForUsers is the policy that says who may be a user: the live one a
// server recorded in db, so that pointing the CLI at another file
// (--policy evil.csv) makes nobody an approver; the files the CLI loads
// when no server has recorded one yet (a new installation).
func policyForUsers(ctx context.Context, db *storage.DB, pf *policyFlags) (*policy.Policy, error) {
	p, err := recordedPolicy(ctx, db)
	if err != nil || p != nil {
		return p, err
	}
	return pf.load()
}

// livePolicyOrFiles is policyForUsers saying which policy it is: the live
// one a server recorded in db (live is true), or, when none is recorded
// yet, the files pf names. which names it with its version, for messages.
func livePolicyOrFiles(ctx context.Context, db *storage.DB, pf *policyFlags) (pol *policy.Policy, which string, live bool, err error) {
	l, err := db.LivePolicy(ctx)
	if err != nil {
		return nil, "", false, err
	}
	if l != nil {
		pol, err := loadRecorded(l)
		if err != nil {
			return nil, "", false, fmt.Errorf("the live policy %s recorded in the database does not load: %w", l.Version, err)
		}
		return pol, fmt.Sprintf("the live policy, version %s (%s)", l.Version, l.Where()), true, nil
	}
	if pol, err = pf.load(); err != nil {
		return nil, "", false, err
	}
	_, file := pf.files()
	return pol, fmt.Sprintf("%s (version %s; no live policy is recorded yet)", file, pol.Version), false, nil
}

// recordedPolicy loads the policy texts a server recorded in db as live,
// or is nil when none is recorded yet.
func recordedPolicy(ctx context.Context, db *storage.DB) (*policy.Policy, error) {
	live, err := db.LivePolicy(ctx)
	if err != nil || live == nil {
		return nil, err
	}
	return loadRecorded(live)
}

// loadRecorded loads the policy texts of a recorded load.
func loadRecorded(l *storage.PolicyLoad) (*policy.Policy, error) {
	return policy.Load(policy.Source{Name: l.ModelFile, Data: []byte(l.Model)}, policy.Source{Name: l.PolicyFile, Data: []byte(l.Policy)})
}
