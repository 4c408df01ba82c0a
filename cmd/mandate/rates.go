package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
)

// loadRates reads the exchange rates named by --rates (or MANDATE_RATES):
// a named file must exist and load; with no name, ./rates.csv is used when
// present, else the embedded copy. Every command that decides loads them,
// so the CLI, the admin page and the server convert money alike.
func (p *policyFlags) loadRates() error {
	src, err := source(p.rates, "rates.csv", mandate.DefaultRates)
	if err != nil {
		return fmt.Errorf("rates: %w", err)
	}
	t, err := rates.Parse(src.Name, src.Data)
	if err != nil {
		return fmt.Errorf("the exchange rates do not load:\n%w", err)
	}
	p.ratesTable, p.ratesPath = t, fileOf(src)
	return nil
}

// ratesWatchPath is the file a running server watches for rate changes:
// the one named, or ./rates.csv even while it does not exist, so that a
// first `mandate rates set` next to a server on the embedded rates is seen.
func (p *policyFlags) ratesWatchPath() string {
	if p.rates != "" {
		return p.rates
	}
	return "rates.csv"
}

// ratesLoad describes, for the record, a load of t by this process.
func ratesLoad(t *rates.Table, command, identity string) *storage.RatesLoad {
	host, _ := os.Hostname()
	return &storage.RatesLoad{Version: t.Version, Base: t.Base, Rates: t.Text(), File: sourceName(policy.Source{Name: t.Name}),
		Command: command, Identity: identity, PID: os.Getpid(), Host: host}
}

// keepRatesLive records the rates a deciding process (serve, admin) loaded
// as the live ones, then reloads them into live, in the background until
// ctx ends, when the file ratesWatchPath names changes, recording each new
// version before it is swapped in; like the policy, a broken edit keeps
// the last good rates. name is the subcommand, identity the agent a serve
// process acts as. A failure to record at start is returned.
//
// One live set of rates, as one live policy: an agent's refund or
// cancellation (checked by the guard in the transaction that records the
// attempt) and an approval are refused unless the rates they converted
// with are the live ones (storage.RatesLoad), so every process that
// decides judges limits on the same base amounts. A process that starts
// records its own rates and so makes them live, even over different rates
// recorded by another process: the others refuse money decisions until
// their files say the same and their watchers reload them, which is what
// an operator who started it with those rates asked for. As with the
// policy, no process takes another's rates from the database: one started
// with a wrong file can stop the others' money decisions, never change
// what they convert with.
func (p *policyFlags) keepRatesLive(ctx context.Context, db *storage.DB, live *rates.Live, name, identity string, log *slog.Logger) error {
	t := live.Table()
	prev, err := db.LiveRates(ctx)
	if err != nil {
		return fmt.Errorf("%s: read the live rates: %w", name, err)
	}
	if err := db.RecordRates(ctx, ratesLoad(t, name+" start", identity)); err != nil {
		return fmt.Errorf("%s: record the rates as live: %w", name, err)
	}
	if prev != nil && prev.Version != t.Version {
		log.Warn("these exchange rates are now the live ones; refunds, cancellations and approvals in processes sharing the database that hold other rates are refused until they load them",
			"version", t.Version, "file", t.Name, "previous", prev.Version, "previous_from", prev.Where())
	}
	rw := &rates.Watcher{Live: live, Path: p.ratesWatchPath(), Logger: log,
		Record: func(t *rates.Table) error { return db.RecordRates(ctx, ratesLoad(t, name+" reload", identity)) }}
	go func() {
		if err := rw.Run(ctx); err != nil {
			log.Warn("rates hot reload is off", "err", err)
		}
	}()
	return nil
}

const ratesUsage = `Usage:
  mandate rates show [--rates FILE]            the base currency, the version and every rate
  mandate rates set CODE RATE [--rates FILE]   set one currency's rate, e.g. mandate rates set EUR 1.0842

A rate is how many units of the base currency one unit of CODE is worth, as
an exact decimal. set rewrites the file atomically (a running server reloads
it within a second), creating ./rates.csv from the shipped rates if needed.
`

func runRates(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, ratesUsage)
		return usageError{"rates: name a subcommand: show or set"}
	}
	switch args[0] {
	case "show":
		return runRatesShow(args[1:], stdout, stderr)
	case "set":
		return runRatesSet(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, ratesUsage)
		return nil
	}
	fmt.Fprint(stderr, ratesUsage)
	return usageError{fmt.Sprintf("rates: unknown subcommand %q; use show or set", args[0])}
}

func runRatesShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rates show", "mandate rates show [--rates FILE]", stderr)
	var pf policyFlags
	fs.StringVar(&pf.rates, "rates", env("MANDATE_RATES", ""), "rates file (env MANDATE_RATES; default ./rates.csv if present, else the embedded one)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if err := pf.loadRates(); err != nil {
		return err
	}
	t := pf.ratesTable
	fmt.Fprintf(stdout, "%s: base %s, version %s, %d currencies\n", t.Name, t.Base, t.Version, len(t.Currencies()))
	for _, c := range t.Currencies() {
		r, _ := t.Rate(c)
		fmt.Fprintf(stdout, "  %s  %s\n", c, r)
	}
	return nil
}

func runRatesSet(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rates set", "mandate rates set CODE RATE [--rates FILE]", stderr)
	path := fs.String("rates", env("MANDATE_RATES", "rates.csv"), "rates file to change; created from the shipped rates if missing (env MANDATE_RATES)")
	// Flags may come after the positional arguments: mandate rates set EUR 1.08 --rates f.csv.
	// A negative number is the rate, not a flag, so that it is refused as a rate.
	var pos []string
	for len(args) > 0 {
		if isNegativeNumber(args[0]) {
			pos, args = append(pos, args[0]), args[1:]
			continue
		}
		n := 1
		for n < len(args) && !isNegativeNumber(args[n]) {
			n++
		}
		seg := args[:n]
		for len(seg) > 0 {
			if err := fs.Parse(seg); err != nil {
				return err
			}
			if fs.NArg() == 0 {
				break
			}
			pos, seg = append(pos, fs.Arg(0)), fs.Args()[1:]
		}
		args = args[n:]
	}
	if len(pos) != 2 {
		return usageError{"rates set: give a currency code and a rate, e.g. mandate rates set EUR 1.0842"}
	}
	currency, rate := strings.ToUpper(pos[0]), pos[1]
	// Mistakes in the arguments are usage errors, found before the file is read.
	if _, known := mandate.CurrencyExponent(currency); !known {
		return usageError{fmt.Sprintf("rates set: unknown currency %q: use an ISO 4217 code Mandate knows, such as EUR", mandate.TruncateBytes(currency, 40))}
	}
	if isNegativeNumber(rate) {
		return usageError{fmt.Sprintf("rates set: rate %q must be greater than zero", mandate.TruncateBytes(rate, 40))}
	}
	if _, err := rates.ParseRate(rate); err != nil {
		return usageError{"rates set: " + err.Error()}
	}
	data, err := os.ReadFile(*path)
	if errors.Is(err, os.ErrNotExist) {
		data = mandate.DefaultRates
	} else if err != nil {
		return err
	}
	old, err := rates.Parse(*path, data)
	if err != nil {
		return fmt.Errorf("rates set: %w", err)
	}
	if currency == old.Base {
		return usageError{fmt.Sprintf("rates set: %s is the base currency: its rate is always 1 (to change the base, edit the base line of %s)", currency, *path)}
	}
	out, err := rates.Set(*path, data, currency, rate)
	if err != nil {
		return fmt.Errorf("rates set: %w", err)
	}
	if err := rates.WriteFile(*path, out); err != nil {
		return err
	}
	t, _ := rates.Parse(*path, out)
	was := "none"
	if r, ok := old.Rate(currency); ok {
		was = r
	}
	fmt.Fprintf(stdout, "%s: 1 %s = %s %s (was %s); version %s\n", *path, currency, rate, t.Base, was, t.Version)
	return nil
}

// isNegativeNumber reports whether arg is a negative number such as -1 or
// -0.5: a mistaken value, never a flag.
func isNegativeNumber(arg string) bool {
	rest, ok := strings.CutPrefix(arg, "-")
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.ParseFloat(rest, 64)
	return err == nil && rest[0] >= '0' && rest[0] <= '9'
}
