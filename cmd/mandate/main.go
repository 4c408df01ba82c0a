// Command mandate is an MCP server that lets AI agents act on customers'
// accounts only as far as explicit rules allow. See `mandate help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
)

const usage = `Mandate: permission rules, an audit trail and human approval between AI agents and your customers' accounts.

Usage:
  mandate serve --agent NAME [flags]     serve the MCP tools over stdio as identity NAME
  mandate serve --http 127.0.0.1:8080 [--tls-cert F --tls-key F]
                                         serve them over Streamable HTTP at /mcp to agents with API keys
                                         or OAuth access tokens (--oauth-issuer, --oauth-audience)
  mandate agent key create NAME [--expires 90d]
                                         an API key for agent NAME, printed once
  mandate agent key list                 every API key and when it was last used
  mandate agent key revoke ID            revoke a key at once, for every server
  mandate agent suspend NAME --as ADMIN --reason TEXT [--actions-only]
                                         stop an agent on every server at once
  mandate agent resume NAME --as ADMIN   lift its suspension
  mandate agent suspensions [--all]      the agents suspended now
  mandate demo [--keep]                  a 30-second scripted tour on throwaway databases
  mandate init [--dir DIR] [--force]     write the default model.conf, policy.csv and rates.csv for editing,
                                         keeping those that exist (--force overwrites them)
  mandate rates show                     the exchange rates money limits are converted with
  mandate rates set CODE RATE            change one rate (a running server reloads it)
  mandate store import [--store FILE] DATA.json
                                         load customers and orders into the embedded store
  mandate store serve [--store FILE] [--listen ADDR] [--token-file F]
                                         serve the embedded store over the HTTP backend contract
  mandate backend check --backend FILE [--order ID] [--conformance [--writes]]
                                         check each system of record the backend file names
  mandate policy check [--strict] [--notes]
                                         lint the rules (docs/policy.md)
  mandate policy explain --agent A --tool T --args JSON | --action ID
                                         say why a call gets its decision
  mandate policy test CASES.yaml         run expected decisions against the rules
  mandate policy replay --policy CANDIDATE [--since 24h]
                                         re-decide recorded traffic under a candidate policy
  mandate approvals list [--status S]    actions waiting for a person
  mandate approvals show ID
  mandate approvals approve ID --as NAME [--comment C] [--token-file F]
  mandate approvals deny ID --as NAME --comment C [--token-file F]
                                         decide as an approver: password prompt, MANDATE_ADMIN_PASSWORD or a token
  mandate remediate --agent NAME --since 2h [--customer ID] [--apply --as ADMIN]
                                         list, then revert, what an agent changed that nobody changed since
  mandate audit verify [--db FILE] [--audit-key FILE] [--since-checkpoint FILE --key VERIFIER_KEY]
                                         check the audit trail's chain, and the actions table against it
  mandate audit mackey --out FILE        a new audit key: with --audit-key, only its holders can write records that verify
  mandate audit keygen --name NAME [--out FILE]
                                         a checkpoint signer key (0600) and its verifier key
  mandate audit checkpoint [--key FILE]  the latest signed checkpoint, or sign one now
  mandate audit prove --action ID [--checkpoint FILE] [--out FILE]
                                         a proof bundle: the action's records in a signed checkpoint
  mandate audit verify-proof --key VERIFIER_KEY BUNDLE
                                         check a proof bundle offline
  mandate audit export [--format jsonl|csv|ocsf|text] [filters]
                                         print audit records
  mandate audit tail [-f] [-n N]         print the last records, and follow new ones
  mandate lineage --customer ID | --order ID | --agent NAME | --trace ID [--since 24h]
                                         everything done to a customer or order, or by an agent, with before and after
  mandate admin [--listen 127.0.0.1:8080] [--tls-cert F --tls-key F] [--public-url URL]
                                         the approvals and audit web page
  mandate admin user add NAME            add an approver or auditor (password prompt, stdin or MANDATE_ADMIN_PASSWORD)
  mandate admin user list                every user, their role under the live policy, token and sessions
  mandate admin user remove NAME         remove one and end their sessions
  mandate admin user passwd NAME         set a new password and end their sessions
  mandate admin user sessions NAME [--revoke]
                                         list or end their sessions
  mandate admin user token NAME          a token for the approvals CLI, printed once
  mandate storage migrate --from mandate.db --to postgres://USER@HOST/DB
                                         copy Mandate's database into a new one (or back), the audit chain verified at both ends
  mandate version                        print the version

Every command answers -h and --help with its flags. Most flags have an
environment twin, named in their help: --agent is MANDATE_AGENT, --db is
MANDATE_DB, and so on.
Exit status: 0 success, 1 failure, 2 a mistake in how mandate was invoked.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mandate:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in how mandate was invoked (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// valueError is a usageError for a flag given a value it refuses, or no
// value: the message names the flag and what is wrong, so run prints it
// without the command's usage (the README promises a bad value only the
// mandate: line).
type valueError struct{ error }

func (e valueError) Unwrap() error { return e.error }

// run runs one command. Help and flag mistakes are answered here for every
// command alike: -h, -help and --help print the command's usage to stdout
// and succeed; an unknown flag or bad flag syntax prints the usage to
// stderr, once, and a flag value refused or missing prints no usage; all
// are usageErrors.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	out := &cliStderr{Writer: stderr}
	err := dispatch(ctx, args, stdin, stdout, out)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, out.usage)
		return nil
	case out.failed:
		// The flag package called Usage: the flags did not parse. The
		// usage helps with an unknown flag, not with a refused value.
		if !errors.As(err, new(valueError)) && !isValueMistake(err) {
			fmt.Fprint(stderr, out.usage)
		}
		var ue usageError
		if !errors.As(err, &ue) {
			err = usageError{fmt.Sprintf("%s: %v", out.name, err)}
		}
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer, stderr *cliStderr) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdin, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "init":
		return runInit(rest, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "lineage":
		return runLineage(ctx, rest, stdout, stderr)
	case "store":
		return runStore(ctx, rest, stdout, stderr)
	case "storage":
		return runStorage(ctx, rest, stdout, stderr)
	case "policy":
		return runPolicy(ctx, rest, stdout, stderr)
	case "backend":
		return runBackend(ctx, rest, stdout, stderr)
	case "approvals":
		return runApprovals(ctx, rest, stdout, stderr)
	case "remediate":
		return runRemediate(ctx, rest, stdout, stderr)
	case "rates":
		return runRates(rest, stdout, stderr)
	case "agent":
		return runAgent(ctx, rest, stdout, stderr)
	case "admin":
		return runAdmin(ctx, rest, stdin, stdout, stderr)
	case "version", "--version":
		fs := newFlags("version", "mandate version", stderr)
		if err := parseFlags(fs, rest, 0); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "mandate", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// cliStderr is the stderr that run gives every command: it passes writes
// through, and keeps the usage of the last flag set made by newFlags, so
// that run can print it where it belongs.
type cliStderr struct {
	io.Writer
	name   string // the flag set's name, e.g. "serve"
	usage  string
	failed bool // the flag package asked for the usage: help or a bad flag
}

// isHelp reports whether a group's argument asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// groupUsage answers a command group (policy, approvals, …) called with
// no subcommand or with a request for help: the list of subcommands, on
// stdout for help, else on stderr with a usageError. done is false when
// args name a subcommand for the group to run.
func groupUsage(group, list string, args []string, stdout, stderr io.Writer) (done bool, err error) {
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, list)
		return true, usageError{group + ": name a subcommand"}
	case isHelp(args[0]):
		fmt.Fprint(stdout, list)
		return true, nil
	}
	return false, nil
}

// unknownSubcommand is the answer to a subcommand a group does not have.
func unknownSubcommand(group, list, name string, stderr io.Writer) error {
	fmt.Fprint(stderr, list)
	return usageError{fmt.Sprintf("%s: unknown subcommand %q", group, name)}
}

// env returns the value of an environment variable, or def when unset.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// newFlags returns a flag set for a command. Through run, its usage goes
// to stdout for -h and --help and to stderr, once, for a flag that does
// not parse (see run); called directly, as some tests do, it writes the
// usage to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	usage := func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage: %s\n", synopsis)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			b.WriteString("\nFlags:\n")
			// A default read from the environment can be a database URL
			// with its password (MANDATE_DB): the usage, which a flag
			// mistake prints to stderr and so to logs, shows it redacted.
			fs.VisitAll(func(f *flag.Flag) { f.DefValue = storage.Redact(f.DefValue) })
			// So can a webhook's or receiver's URL (MANDATE_NOTIFY_URL,
			// MANDATE_CHECKPOINT_URL): a Slack webhook's path is its secret.
			fs.VisitAll(func(f *flag.Flag) {
				if (f.Name != "notify-url" && f.Name != "checkpoint-url") || f.DefValue == "" {
					return
				}
				switch h := mandate.URLHost(f.DefValue); {
				case h == "":
					f.DefValue = "(set, not shown)"
				case strings.TrimSuffix(f.DefValue, "/") != h:
					f.DefValue = h + "/…"
				}
			})
			fs.SetOutput(&b)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
		return b.String()
	}
	if out, ok := stderr.(*cliStderr); ok {
		// The flag package's own error line is dropped: main prints the
		// error once, after the usage.
		fs.SetOutput(io.Discard)
		out.name, out.usage, out.failed = name, "", false
		fs.Usage = func() { out.usage, out.failed = usage(), true }
		return fs
	}
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage()) }
	return fs
}

// parseFlags parses args and refuses more than positional positional
// arguments, which then are fs.Args(). Flags may come before, between or
// after them, as with parseOne; after "--" everything is positional. A flag
// that does not parse is a usageError, and a value a flag refuses (or a
// missing one) a valueError wrapping one; -h and --help give flag.ErrHelp,
// which run answers.
func parseFlags(fs *flag.FlagSet, args []string, positional int) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			ue := usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
			if isValueMistake(err) {
				return valueError{ue}
			}
			return ue
		}
		if fs.NArg() == 0 {
			break
		}
		if i := len(args) - fs.NArg() - 1; i >= 0 && args[i] == "--" {
			pos = append(pos, fs.Args()...)
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	// Leave the positional arguments, and only them, in fs.Args().
	if err := fs.Parse(append([]string{"--"}, pos...)); err != nil {
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if d, ok := f.Value.(*durationValue); ok && d.envErr != nil && !d.set && err == nil {
			err = d.envErr
		}
	})
	if err != nil {
		return err
	}
	if fs.NArg() > positional {
		fs.Usage()
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(positional))}
	}
	return nil
}

// isValueMistake reports whether err, from the flag package, is about a
// known flag's value (refused or missing) rather than an unknown flag or
// bad syntax, which still print the usage. parseFlags marks these with
// valueError; parsers that return the flag package's error as it is
// (parseOne, rates set) are recognised here.
func isValueMistake(err error) bool {
	msg := err.Error()
	for _, p := range []string{"invalid value ", "invalid boolean value ", "flag needs an argument: "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// durationValue is a duration flag that must be positive, with a default
// from an environment variable. A value that does not parse or is not
// positive is an error naming the flag or the variable, never a silent
// fall back to the default.
type durationValue struct {
	d      time.Duration
	set    bool  // given on the command line, which wins over the variable
	envErr error // the variable's value was refused
}

func (v *durationValue) String() string {
	if v == nil {
		return ""
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	d, err := parsePositive(s)
	if err != nil {
		return err
	}
	v.d, v.set = d, true
	return nil
}

func parsePositive(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration: use a number and a unit, such as 90s, 15m or 24h")
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be longer than 0")
	}
	return d, nil
}

// durationFlag defines --name, a positive duration whose default is the
// environment variable envName if set, else def.
func durationFlag(fs *flag.FlagSet, name, envName string, def time.Duration, usage string) *time.Duration {
	v := &durationValue{d: def}
	if s, ok := os.LookupEnv(envName); ok {
		if d, err := parsePositive(s); err != nil {
			v.envErr = usageError{fmt.Sprintf("%s=%q (the default of --%s): %v", envName, s, name, err)}
		} else {
			v.d = d
		}
	}
	// The back-quoted word names the value in -h: "--approval-ttl duration".
	fs.Var(v, name, usage+"; a positive `duration` such as 90s or 24h")
	return &v.d
}

// newLogger writes to w (stderr: stdout is for JSON-RPC only) as text
// through tint, coloured only on a terminal, or as JSON.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: use debug, info, warn or error", level)}
	}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, NoColor: !isTerminal(w), TimeFormat: "15:04:05.000"})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	}
	return nil, usageError{fmt.Sprintf("--log-format %q: use text or json", format)}
}

func isTerminal(w io.Writer) bool {
	if c, ok := w.(*cliStderr); ok {
		w = c.Writer
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
