package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/backend/stripe"
)

// backendFlagHelp is the help text of every command's --backend flag.
const backendFlagHelp = "backend file naming the systems of record (YAML; see docs/backends.md); without it the embedded --store serves everything (env MANDATE_BACKEND)"

// closers closes what openBackend opened.
type closers []func() error

// Close closes everything, returning the first error.
func (c closers) Close() error {
	var first error
	for _, f := range c {
		if err := f(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// openBackend builds the systems of record. Without a backend file it is
// openStore, exactly as before: the embedded store at storePath, seeded with
// the demo data when new (seeded reports that). With one, each capability
// is built from its entry; a capability on the store uses the entry's path,
// or storePath when the entry gives none. With mustExist, a store file that
// does not exist is an error instead of a new demo store, for commands that
// act on an existing deployment.
func openBackend(ctx context.Context, backendFile, storePath string, mustExist bool) (closers, backend.Backend, bool, error) {
	if backendFile == "" {
		if mustExist {
			if _, err := os.Stat(storePath); err != nil {
				return nil, backend.Backend{}, false, fmt.Errorf("no store at %s (set --store or MANDATE_STORE, or --backend): %w", storePath, err)
			}
		}
		st, be, seeded, err := openStore(ctx, storePath)
		if err != nil {
			return nil, be, false, err
		}
		return closers{st.Close}, be, seeded, nil
	}
	cfg, err := backend.LoadConfig(backendFile, os.Getenv)
	if err != nil {
		return nil, backend.Backend{}, false, err
	}
	return buildBackend(ctx, cfg, storePath, mustExist)
}

// buildBackend opens the adapters a checked backend file names.
func buildBackend(ctx context.Context, cfg *backend.Config, storePath string, mustExist bool) (closers, backend.Backend, bool, error) {
	if err := cfg.CheckStores(storePath); err != nil {
		return nil, backend.Backend{}, false, err
	}
	var cl closers
	var be backend.Backend
	var seeded bool
	stores := map[string]*store.Store{}
	for _, name := range backend.Capabilities {
		src := cfg.Capability(name)
		var v any
		switch src.Kind {
		case backend.KindStore:
			path := src.Store.Path
			if path == "" {
				path = storePath
			}
			st, ok := stores[path]
			if !ok {
				if mustExist {
					if _, err := os.Stat(path); err != nil {
						cl.Close()
						return nil, be, false, fmt.Errorf("backend file %s: %s.store: no store at %s: %w", cfg.File, name, path, err)
					}
				}
				var s bool
				var err error
				if st, s, err = store.OpenSeeded(ctx, path); err != nil {
					cl.Close()
					return nil, be, false, fmt.Errorf("store %s: %w", path, err)
				}
				seeded = seeded || s
				stores[path] = st
				cl = append(cl, st.Close)
			}
			v = st
		case backend.KindHTTP:
			v = httpClient(name, src.HTTP)
		case backend.KindStripe:
			// Payments come last, so be.Orders is built: Stripe refunds on
			// each order's payment_ref, and the orders' money facts become
			// Stripe's, so the rules see what the money system says.
			p := stripe.New(stripe.Config{SecretKey: src.Stripe.SecretKey, APIURL: src.Stripe.APIURL, Timeout: src.Stripe.Timeout}, be.Orders)
			be.Orders = stripe.Orders{Orders: be.Orders, Payments: p}
			v = p
		}
		switch name {
		case "orders":
			be.Orders = v.(backend.Orders)
		case "customers":
			be.Customers = v.(backend.Customers)
		case "payments":
			be.Payments = v.(backend.Payments)
		}
	}
	return cl, be, seeded, nil
}

// httpClient builds the contract's client for one capability. Retries are
// safe for every call it makes (see httpapi.Client.do); two bound the wait.
func httpClient(capability string, src *backend.HTTPSource) *httpapi.Client {
	hc := &http.Client{}
	if src.TLS != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = src.TLS
		hc.Transport = t
	}
	return &httpapi.Client{BaseURL: src.URL, Token: src.Token, HTTP: hc, Timeout: src.Timeout, Retries: 2,
		Name: "the " + capability + " service"}
}
