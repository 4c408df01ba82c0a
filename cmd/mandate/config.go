package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
)

// policyFlags are the --model and --policy flags shared by commands that
// load a policy.
type policyFlags struct {
	model, policy string
	// Set by load: the files actually read ("" for an embedded copy) and
	// the model as read, for the hot-reload watcher.
	modelPath, policyPath string
	modelSrc, policySrc   policy.Source

	// rates is the --rates flag; loaded by load into ratesTable, read from
	// ratesPath ("" for the embedded copy). See rates.go.
	rates      string
	ratesPath  string
	ratesTable *rates.Table

	// onReloadFail, when set, is told of each hot reload that left the
	// last good policy live (metrics).
	onReloadFail func(error)
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.model, "model", env("MANDATE_MODEL", ""), "Casbin model file (env MANDATE_MODEL; default ./model.conf if present, else the embedded one)")
	fs.StringVar(&p.policy, "policy", env("MANDATE_POLICY", ""), "policy file (env MANDATE_POLICY; default ./policy.csv if present, else the embedded one)")
	fs.StringVar(&p.rates, "rates", env("MANDATE_RATES", ""), "exchange rates into the base currency money limits are written in (env MANDATE_RATES; default ./rates.csv if present, else the embedded one)")
}

// load reads the model and policy: a named file must exist; with no name,
// ./model.conf or ./policy.csv is used when present, else the embedded copy.
func (p *policyFlags) load() (*policy.Policy, error) {
	m, err := source(p.model, "model.conf", mandate.DefaultModel)
	if err != nil {
		return nil, err
	}
	pol, err := source(p.policy, "policy.csv", mandate.DefaultPolicy)
	if err != nil {
		return nil, err
	}
	loaded, err := policy.Load(m, pol)
	if err != nil {
		return nil, fmt.Errorf("the policy does not load:\n%w", err)
	}
	p.modelSrc, p.policySrc = m, pol
	p.modelPath, p.policyPath = fileOf(m), fileOf(pol)
	if err := p.loadRates(); err != nil {
		return nil, err
	}
	return loaded, nil
}

// files names where the loaded model and policy came from, as absolute
// paths, for the policy record and for messages.
func (p *policyFlags) files() (model, pol string) {
	return sourceName(p.modelSrc), sourceName(p.policySrc)
}

// sourceName is the absolute path a source was read from, or its name
// ("embedded policy.csv") for an embedded copy.
func sourceName(s policy.Source) string {
	if fileOf(s) == "" {
		return s.Name
	}
	if abs, err := filepath.Abs(s.Name); err == nil {
		return abs
	}
	return s.Name
}

// policyLoad describes, for the record, a load of pol from model and src by
// this process.
func policyLoad(pol *policy.Policy, model, src policy.Source, command, identity string) *storage.PolicyLoad {
	host, _ := os.Hostname()
	return &storage.PolicyLoad{
		Version: pol.Version, Model: string(model.Data), Policy: string(src.Data),
		ModelFile: sourceName(model), PolicyFile: sourceName(src),
		Command: command, Identity: identity, PID: os.Getpid(), Host: host,
	}
}

// keepPolicyLive records the policy a deciding process (serve, admin) loaded
// as the live one, then, when it was read from a file, watches the files and
// records and swaps in each new version, exactly as serve always did. name is
// the subcommand, identity the agent a serve process acts as. onSwap, if
// set, runs after each new policy went live. A failure to record at start is
// returned: a process must not decide under a policy nobody knows is live.
//
// One live policy: the newest recorded load is live, and a process holding
// any other version refuses to act (the guard for agent actions, approvals
// and recovery), failing closed. It does not adopt another process's
// policy from the database: a process decides only under policy files its
// operator gave it, so a process started with other files (by mistake, or
// by whoever controls its command line) can stop the others but never
// change what they allow. Processes that watch the same files reload and
// record the same version, so in a correct deployment they always agree.
func keepPolicyLive(ctx context.Context, db *storage.DB, engine *policy.Engine, pf *policyFlags, name, identity string, log *slog.Logger, onSwap func(old, new *policy.Policy)) error {
	prev, err := db.LivePolicy(ctx)
	if err != nil {
		return fmt.Errorf("%s: read the live policy: %w", name, err)
	}
	if err := db.RecordPolicy(ctx, policyLoad(engine.Policy(), pf.modelSrc, pf.policySrc, name+" start", identity)); err != nil {
		return fmt.Errorf("%s: record the policy as live: %w", name, err)
	}
	if prev != nil && prev.Version != engine.Policy().Version {
		// Loud: every other process sharing the database now refuses to
		// act until it loads this version too.
		log.Warn("this policy is now the live one; processes sharing the database that hold another version refuse to act until they load it",
			"version", engine.Policy().Version, "file", sourceName(pf.policySrc), "previous", prev.Version, "previous_from", prev.Where())
	}
	if pf.policyPath == "" {
		return nil // the embedded policy cannot change while running
	}
	// Hot reload: a new policy goes live only once it loads and is
	// recorded; a broken edit leaves the last good one live and logs
	// file:line.
	w := &policy.Watcher{Engine: engine, ModelPath: pf.modelPath, Model: pf.modelSrc, PolicyPath: pf.policyPath, Logger: log,
		OnSwap: onSwap, OnFail: pf.onReloadFail,
		Record: func(p *policy.Policy, m, src policy.Source) error {
			return db.RecordPolicy(ctx, policyLoad(p, m, src, name+" reload", identity))
		}}
	go func() {
		if err := w.Run(ctx); err != nil {
			log.Warn("policy hot reload is off", "err", err)
		}
	}()
	return nil
}

// fileOf is the file a source was read from, or "" for an embedded copy.
func fileOf(s policy.Source) string {
	if strings.HasPrefix(s.Name, "embedded ") {
		return ""
	}
	return s.Name
}

func source(path, def string, embedded []byte) (policy.Source, error) {
	if path == "" {
		if b, err := os.ReadFile(def); err == nil {
			return policy.Source{Name: def, Data: b}, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return policy.Source{}, err
		}
		return policy.Source{Name: "embedded " + def, Data: embedded}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return policy.Source{}, err
	}
	return policy.Source{Name: path, Data: b}, nil
}

// openStore opens the embedded store, seeding the demo data set when the
// file does not exist yet.
func openStore(ctx context.Context, path string) (*store.Store, backend.Backend, bool, error) {
	st, seeded, err := store.OpenSeeded(ctx, path)
	if err != nil {
		return nil, backend.Backend{}, false, fmt.Errorf("store %s: %w", path, err)
	}
	return st, backend.Backend{Payments: st, Orders: st, Customers: st}, seeded, nil
}

// openExistingDB opens a gateway database that must already exist, so that
// a typo in --db is an error rather than a new empty trail.
func openExistingDB(ctx context.Context, path string, opts ...storage.Option) (*storage.DB, error) {
	if storage.IsURL(path) {
		// A PostgreSQL database must exist already: Open fails otherwise.
		return storage.Open(ctx, path, opts...)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no audit database at %s (set --db or MANDATE_DB): %w", path, err)
	}
	return storage.Open(ctx, path, opts...)
}

// oauthConfig is serve's OAuth resource server configuration from its
// flags, nil when no issuer is given; a mistake is a usage error.
func oauthConfig(httpAddr, issuer, audience, claim, scope string) (*auth.OAuthConfig, error) {
	if issuer == "" {
		if audience != "" || scope != "" || claim != "sub" {
			return nil, usageError{"serve: --oauth-audience, --oauth-scope and --identity-claim need --oauth-issuer"}
		}
		return nil, nil
	}
	if httpAddr == "" {
		return nil, usageError{"serve: --oauth-issuer applies only with --http: over stdio the identity is --agent"}
	}
	c := &auth.OAuthConfig{Issuer: issuer, Audience: audience, IdentityClaim: claim, Scope: scope}
	if err := c.Check(); err != nil {
		return nil, usageError{"serve: " + err.Error()}
	}
	return c, nil
}
