package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/stripe"
)

// runBackend dispatches `mandate backend SUBCOMMAND`.
const backendUsage = `Usage:
  mandate backend check --backend FILE [--order ID] [--conformance [--writes]]
      check each system of record the backend file names (docs/backends.md)
`

func runBackend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("backend", backendUsage, args, stdout, stderr); done {
		return err
	}
	if args[0] != "check" {
		return unknownSubcommand("backend", backendUsage, args[0], stderr)
	}
	return runBackendCheck(ctx, args[1:], stdout, stderr)
}

// probe is one capability's result.
type probe struct {
	capability, system    string
	reachable, authorized string
	latency               time.Duration
	note                  string
	ok                    bool
}

// runBackendCheck connects to each system of record the backend file names
// and reports, one line per capability, whether it is reachable, whether it
// accepts Mandate's credentials, and how long a read took.
func runBackendCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backend check", "mandate backend check --backend FILE [--order ID] [--conformance [--writes]]", stderr)
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "embedded store for capabilities the file leaves on the store; must exist (env MANDATE_STORE)")
	orderID := fs.String("order", "", "an order known to exist: it is read through every capability (with --writes: the order the write checks refund and cancel; use a test order)")
	conformance := fs.Bool("conformance", false, "also run the HTTP contract checks against each http service (read-only unless --writes)")
	writes := fs.Bool("writes", false, "with --conformance: add idempotency checks that refund 0.01 on --order and cancel it")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *backendFile == "" {
		return usageError{"backend check: name the backend file with --backend FILE or MANDATE_BACKEND"}
	}
	if *writes && (!*conformance || *orderID == "") {
		return usageError{"backend check: --writes needs --conformance and --order ID (a test order it may refund and cancel)"}
	}
	cfg, err := backend.LoadConfig(*backendFile, os.Getenv)
	if err != nil {
		return err
	}
	cl, be, _, err := buildBackend(ctx, cfg, *storePath, true)
	if err != nil {
		return err
	}
	defer cl.Close()

	fmt.Fprintf(stdout, "backend file %s\n\n", *backendFile)
	probes := checkCapabilities(ctx, cfg, be, *storePath, *orderID)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CAPABILITY\tSYSTEM\tREACHABLE\tAUTHENTICATED\tLATENCY\tRESULT")
	failed := 0
	for _, p := range probes {
		mark := "ok"
		if !p.ok {
			mark, failed = "FAIL", failed+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s: %s\n", p.capability, p.system, p.reachable, p.authorized,
			p.latency.Round(100*time.Microsecond), mark, p.note)
	}
	tw.Flush()
	if *conformance {
		n, err := runConformance(ctx, cfg, *orderID, *writes, stdout)
		if err != nil {
			return err
		}
		failed += n
	}
	if failed > 0 {
		return fmt.Errorf("backend check: %d check(s) failed", failed)
	}
	fmt.Fprintln(stdout, "\nall checks passed")
	return nil
}

func checkCapabilities(ctx context.Context, cfg *backend.Config, be backend.Backend, storePath, orderID string) []probe {
	var out []probe
	customerID, orderRead := "", false
	for _, name := range backend.Capabilities {
		src := cfg.Capability(name)
		p := probe{capability: name, system: describeSource(src, storePath)}
		start := time.Now()
		var err error
		var what string
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		switch name {
		case "orders":
			id := orderID
			if id == "" {
				id = "mandate-check-no-such-order"
			}
			var o backend.Order
			o, err = be.Orders.Order(cctx, id)
			customerID, what, orderRead = o.CustomerID, "order "+id, err == nil
		case "customers":
			id := customerID
			if id == "" {
				id = "mandate-check-no-such-customer"
			}
			_, err = be.Customers.Customer(cctx, id)
			what = "customer " + id
		case "payments":
			if pc, ok := be.Payments.(interface {
				CheckOrder(context.Context, string) (string, error)
			}); ok && orderID != "" && orderRead {
				// The payment is found through the order; with the order
				// unreadable, the lookup by key below checks this system
				// alone, so the orders' failure is not reported here too.
				what, err = pc.CheckOrder(cctx, orderID)
			} else {
				_, err = be.Payments.RefundByKey(cctx, "mandate-check-no-such-key")
				what = "refund lookup by key"
			}
		}
		cancel()
		p.latency = time.Since(start)
		code := mandate.ErrorCode(err)
		known := (name == "orders" && orderID != "") || (name == "customers" && customerID != "")
		switch {
		case errors.Is(err, backend.ErrUnauthorized):
			p.reachable, p.authorized, p.note = "yes", "NO", mandate.ErrorMessage(err)
		case code == mandate.EUNAVAILABLE || code == mandate.EINTERNAL:
			p.reachable, p.authorized, p.note = "NO", "-", mandate.ErrorMessage(err)
		case code == mandate.ENOTFOUND && !known:
			p.reachable, p.authorized, p.ok, p.note = "yes", "yes", true, what+": not found, as expected"
		case err != nil:
			p.reachable, p.authorized, p.note = "yes", "yes", what+": "+mandate.ErrorMessage(err)
		default:
			p.reachable, p.authorized, p.ok, p.note = "yes", "yes", true, what+" read"
		}
		if src.Kind == backend.KindStore {
			p.authorized = "n/a"
		}
		out = append(out, p)
	}
	return out
}

func describeSource(src backend.Source, storePath string) string {
	switch src.Kind {
	case backend.KindHTTP:
		return "http " + src.HTTP.URL
	case backend.KindStripe:
		if src.Stripe.APIURL != "" {
			return "stripe " + src.Stripe.APIURL + " (API " + stripe.APIVersion + ")"
		}
		return "stripe api.stripe.com (API " + stripe.APIVersion + ")"
	}
	if src.Store.Path != "" {
		return "store " + src.Store.Path
	}
	return "store " + storePath
}

// runConformance runs the contract checks against each distinct HTTP
// service the backend file names, and prints one line per check. It
// returns how many failed.
func runConformance(ctx context.Context, cfg *backend.Config, orderID string, writes bool, stdout io.Writer) (int, error) {
	failed, seen := 0, map[string]bool{}
	for _, name := range backend.Capabilities {
		src := cfg.Capability(name)
		if src.Kind != backend.KindHTTP || seen[src.HTTP.URL] {
			continue
		}
		seen[src.HTTP.URL] = true
		hc := httpClient(name, src.HTTP).HTTP
		conf := &httpapi.Conformance{BaseURL: src.HTTP.URL, Token: src.HTTP.Token, HTTP: hc, OrderID: orderID, Writes: writes}
		fmt.Fprintf(stdout, "\ncontract checks for %s (contract version %s):\n", src.HTTP.URL, httpapi.ContractVersion)
		for _, r := range conf.Run(ctx) {
			switch {
			case r.Skipped != "":
				fmt.Fprintf(stdout, "  skip  %-24s %s\n", r.Name, r.Skipped)
			case r.Err != nil:
				failed++
				fmt.Fprintf(stdout, "  FAIL  %-24s %s: %v\n", r.Name, r.Detail, r.Err)
			default:
				fmt.Fprintf(stdout, "  ok    %-24s %s\n", r.Name, r.Detail)
			}
		}
	}
	if len(seen) == 0 {
		fmt.Fprintln(stdout, "\nno http service in the backend file: nothing for --conformance to check")
	}
	return failed, nil
}
