package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/server"
)

func runServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "mandate serve --agent NAME [flags]", stderr)
	agent := fs.String("agent", env("MANDATE_AGENT", ""), "identity this agent acts as, as named in policy.csv (env MANDATE_AGENT); required")
	dbPath := fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's own database: audit trail and actions (env MANDATE_DB)")
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "embedded store; created with the demo data if missing (env MANDATE_STORE)")
	ttl := fs.Duration("approval-ttl", envDuration("MANDATE_APPROVAL_TTL", 24*time.Hour), "how long a pending action waits for a person (env MANDATE_APPROVAL_TTL)")
	level := fs.String("log-level", env("MANDATE_LOG_LEVEL", "info"), "debug, info, warn or error (env MANDATE_LOG_LEVEL)")
	format := fs.String("log-format", env("MANDATE_LOG_FORMAT", "text"), "text or json; logs go to stderr (env MANDATE_LOG_FORMAT)")
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *agent == "" {
		return usageError{"serve: no agent identity. Set --agent NAME or MANDATE_AGENT=NAME to an identity in policy.csv, e.g. MANDATE_AGENT=demo-agent"}
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	pol, err := pf.load()
	if err != nil {
		return err
	}
	if !pol.Known(*agent) {
		return usageError{fmt.Sprintf("serve: identity %q is not in the policy, so every call would be denied; identities and roles there: %s", *agent, knownNames(pol))}
	}
	db, err := storage.Open(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	st, be, seeded, err := openStore(ctx, *storePath)
	if err != nil {
		return err
	}
	defer st.Close()
	if seeded {
		log.Info("created the embedded store with demo data", "store", *storePath)
	}

	deps := &tools.Deps{Policy: policy.NewEngine(pol), DB: db, Backend: be, Logger: log, ApprovalTTL: *ttl}
	s := tools.NewServer(deps, version)
	log.Info("serving MCP on stdio", "agent", *agent, "db", *dbPath, "store", *storePath, "policy_version", pol.Version)
	stdio := server.NewStdioServer(s)
	stdio.SetErrorLogger(slog.NewLogLogger(log.Handler(), slog.LevelError))
	// The identity comes from this server's configuration, never from a
	// tool argument or the session.
	server.WithStdioContextFunc(func(ctx context.Context) context.Context {
		return tools.WithAgent(ctx, *agent)
	})(stdio)
	err = stdio.Listen(ctx, stdin, stdout)
	if ctx.Err() != nil || err == io.EOF {
		return nil
	}
	return err
}

func knownNames(p *policy.Policy) string {
	seen := map[string]bool{}
	for _, g := range p.Grants {
		seen[g.Member] = true
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(env(name, "")); err == nil {
		return v
	}
	return def
}
