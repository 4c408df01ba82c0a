package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/mandatehq/mandate"
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
	modelSrc              policy.Source

	// rates is the --rates flag; loaded by load into ratesTable, read from
	// ratesPath ("" for the embedded copy). See rates.go.
	rates      string
	ratesPath  string
	ratesTable *rates.Table
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
	p.modelSrc = m
	p.modelPath, p.policyPath = fileOf(m), fileOf(pol)
	if err := p.loadRates(); err != nil {
		return nil, err
	}
	return loaded, nil
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
func openExistingDB(ctx context.Context, path string) (*storage.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no audit database at %s (set --db or MANDATE_DB): %w", path, err)
	}
	return storage.Open(ctx, path)
}
