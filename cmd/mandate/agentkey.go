package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

const agentKeyUsage = `Usage:
  mandate agent key create NAME [--expires 90d] [--audit-key FILE] [--db FILE]
      create an API key for agent NAME (an identity the live policy grants some tool) and print it once; audited
  mandate agent key list [--db FILE]        every key: id, agent, created, expires, last used, revoked
  mandate agent key revoke ID|KEY [--audit-key FILE] [--db FILE]
      revoke a key by its id (or the whole key, after a leak); every server sharing the database refuses it at once; audited
`

// runAgent is the `mandate agent` group: the API keys that agents present
// to `mandate serve --http`, and the kill switch (agentsuspend.go).
func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("agent", agentKeyUsage+agentSuspendUsage, args, stdout, stderr); done {
		return err
	}
	switch args[0] {
	case "suspend", "resume", "suspensions":
		return runAgentSuspend(ctx, args[0], args[1:], stdout, stderr)
	}
	if args[0] != "key" {
		return unknownSubcommand("agent", agentKeyUsage+agentSuspendUsage, args[0], stderr)
	}
	args = args[1:]
	if done, err := groupUsage("agent key", agentKeyUsage, args, stdout, stderr); done {
		return err
	}
	switch args[0] {
	case "create":
		return runAgentKeyCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return runAgentKeyList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return runAgentKeyRevoke(ctx, args[1:], stdout, stderr)
	}
	return unknownSubcommand("agent key", agentKeyUsage, args[0], stderr)
}

// parseOne parses flags that may come before or after exactly one
// positional argument, what; a missing one is "name the "+what.
func parseOne(fs *flag.FlagSet, args []string, what string) (string, error) {
	var arg string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		if arg != "" {
			fs.Usage() // as parseFlags does for a stray argument
			return "", usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
		}
		arg, args = fs.Arg(0), fs.Args()[1:]
	}
	if arg == "" {
		return "", usageError{fs.Name() + ": name the " + what}
	}
	return arg, nil
}

// parseDays is a positive duration that also takes whole days ("90d"),
// since key lifetimes are counted in days.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d <= 0 || d > 3650 {
			return 0, fmt.Errorf("%q: give whole days from 1d to 3650d, or a duration such as 12h", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := parsePositive(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %v (or whole days, such as 90d)", s, err)
	}
	return d, nil
}

func runAgentKeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent key create", "mandate agent key create NAME [--expires 90d] [--audit-key FILE] [--db FILE --policy FILE]", stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs) // creating a key is recorded: a keyed trail needs the key
	expires := fs.String("expires", "", "the key stops working after this long, e.g. 90d or 12h; default never")
	var pf policyFlags
	pf.register(fs)
	name, err := parseOne(fs, args, "agent, an identity in the live policy, e.g. demo-agent")
	if err != nil {
		return err
	}
	var ttl time.Duration
	if *expires != "" {
		if ttl, err = parseDays(*expires); err != nil {
			return usageError{"agent key create: --expires " + err.Error()}
		}
	}
	if p := mandate.NameProblem(name); p != "" {
		return usageError{fmt.Sprintf("agent key create: %q: %s", mandate.Visible(name, false), p)}
	}
	db, err := storage.Open(ctx, *dbPath, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer db.Close()
	// Every request with the key is checked against the live policy, so
	// NAME is judged under it, never under ./policy.csv: a key it would
	// refuse is useless, and one it accepts must not be refused.
	pol, which, live, err := livePolicyOrFiles(ctx, db, &pf)
	if err != nil {
		return fmt.Errorf("agent key create: %w", err)
	}
	if !live {
		fmt.Fprintf(stderr, "note: no server has recorded a live policy in this database yet, so the agent is checked against %s; once a server runs, requests are checked against the policy it loads\n", which)
	}
	var names []string
	for _, st := range tools.ServerTools(&tools.Deps{}) {
		names = append(names, st.Tool.Name)
	}
	if !auth.IsAgent(pol, name, names) {
		msg := fmt.Sprintf("agent key create: %q is not an agent (an identity granted some tool) in %s; agents there: %s",
			name, which, agentNames(pol, names))
		if files, err := pf.load(); err == nil && files.Version != pol.Version && auth.IsAgent(files, name, names) {
			_, file := pf.files()
			msg += fmt.Sprintf(". %s (version %s) makes it one, but it is not live until a server loads it (start serve with --policy on it)", file, files.Version)
		}
		return usageError{msg}
	}
	if err := db.CheckWriteKey(ctx); err != nil {
		return err
	}
	var exp time.Time
	if ttl > 0 {
		exp = db.Now().Add(ttl)
	}
	key, k, err := db.CreateAPIKey(ctx, name, exp)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, key)
	until := "never expires"
	if !exp.IsZero() {
		until = "expires " + exp.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "API key %s for %s (%s). It is shown only this once: store it now; agents send it as Authorization: Bearer <key>.\n", k.ID, name, until)
	return nil
}

func runAgentKeyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent key list", "mandate agent key list [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	keys, err := db.APIKeys(ctx)
	if err != nil {
		return err
	}
	now := db.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGENT\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
	for _, k := range keys {
		status, expires := keyStatus(k, now)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, mandate.Visible(k.Identity, false), status,
			k.CreatedAt.UTC().Format(time.RFC3339), expires, orDash(k.LastUsed))
	}
	return tw.Flush()
}

// keyStatus is k's status and expiry as the list shows them. A revoked_at
// or expires_at set by hand to text that is no time counts as revoked or
// expired, and the list says so instead of showing a made-up time.
func keyStatus(k storage.APIKey, now time.Time) (status, expires string) {
	status, expires = "active", orDash(k.ExpiresAt)
	revokedAt := k.RevokedAt.UTC().Format(time.RFC3339)
	for _, u := range k.Unreadable {
		switch {
		case strings.HasPrefix(u, "revoked_at="):
			revokedAt = "(unreadable " + u + ")"
		case strings.HasPrefix(u, "expires_at="):
			expires = "unreadable " + u
		}
	}
	switch {
	case !k.RevokedAt.IsZero():
		status = "revoked " + revokedAt
	case !k.Active(now):
		status = "expired"
	}
	return status, expires
}

func orDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func runAgentKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent key revoke", "mandate agent key revoke ID|KEY [--audit-key FILE] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs)
	arg, err := parseOne(fs, args, "key id (the part after mk_; `mandate agent key list` shows them)")
	if err != nil {
		return err
	}
	// A whole key (mk_<id>_<secret>) is what one has after a leak: revoke
	// its id. Ids hold no '_', so whatever follows one is the secret, or
	// part of it, and is never shown.
	id, secret, whole := strings.Cut(strings.TrimPrefix(arg, storage.APIKeyPrefix), "_")
	db, err := openExistingDB(ctx, *dbPath, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.CheckWriteKey(ctx); err != nil {
		return err
	}
	k, err := db.RevokeAPIKey(ctx, id)
	if err != nil {
		return err
	}
	if whole && secret != "" {
		fmt.Fprintf(stderr, "That was a whole key; revoking its id %s (the secret is not needed, and not shown).\n", k.ID)
	}
	fmt.Fprintf(stdout, "revoked API key %s of %s at %s\n", k.ID, mandate.Visible(k.Identity, false), k.RevokedAt.UTC().Format(time.RFC3339))
	return nil
}

// agentNames lists the policy's agents, for an error message.
func agentNames(p *policy.Policy, toolNames []string) string {
	var out []string
	for _, n := range strings.Split(knownNames(p), ", ") {
		if auth.IsAgent(p, n, toolNames) {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}
