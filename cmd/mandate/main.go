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

	"github.com/lmittmann/tint"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `Mandate: permission rules, an audit trail and human approval between AI agents and your customers' accounts.

Usage:
  mandate serve   --agent NAME [flags]   serve the MCP tools over stdio as identity NAME
  mandate demo                           a 30-second scripted tour on throwaway databases
  mandate init    [--dir DIR]            write the default model.conf and policy.csv for editing
  mandate audit export [--db FILE]       print the audit trail as JSON Lines
  mandate store import --store FILE DATA.json
                                         load customers and orders into the embedded store
  mandate store serve --store FILE [--listen ADDR] [--token-file F]
                                         serve the embedded store over the HTTP backend contract
  mandate backend check --backend FILE [--order ID] [--conformance [--writes]]
                                         check each system of record the backend file names
  mandate policy check|explain|test|replay
                                         lint, explain, test or replay the rules (docs/policy.md)
  mandate approvals list [--status S] | show ID | approve ID --as NAME [--comment C] | deny ID --as NAME --comment C
                                         review actions waiting for a person
  mandate admin   [--listen 127.0.0.1:8080]
                                         the approvals and audit web page
  mandate admin user add NAME            add an approver (password on stdin)
  mandate version

Run 'mandate COMMAND -h' for a command's flags. Every flag has an environment
twin: --agent is MANDATE_AGENT, --db is MANDATE_DB, and so on.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mandate:", err)
		}
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in how mandate was invoked (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
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
	case "store":
		return runStore(ctx, rest, stdout, stderr)
	case "policy":
		return runPolicy(ctx, rest, stdout, stderr)
	case "backend":
		return runBackend(ctx, rest, stdout, stderr)
	case "approvals":
		return runApprovals(ctx, rest, stdout, stderr)
	case "admin":
		return runAdmin(ctx, rest, stdin, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "mandate", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// env returns the value of an environment variable, or def when unset.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// newFlags returns a flag set that prints its usage to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses stray positional arguments unless
// allowed.
func parseFlags(fs *flag.FlagSet, args []string, positional int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > positional {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(positional))}
	}
	return nil
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
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
