package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend/store"
)

const storeUsage = `Usage:
  mandate store import [--store FILE] DATA.json
      load customers and orders into the embedded store; all or nothing
  mandate store serve [--store FILE] [--listen 127.0.0.1:9000] [--token-file F]
      serve the embedded store over the HTTP backend contract (docs/backends.md)
`

func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("store", storeUsage, args, stdout, stderr); done {
		return err
	}
	if args[0] == "serve" {
		return runStoreServe(ctx, args[1:], stdout, stderr)
	}
	if args[0] != "import" {
		return unknownSubcommand("store", storeUsage, args[0], stderr)
	}
	fs := newFlags("store import", "mandate store import [--store FILE] DATA.json", stderr)
	path := fs.String("store", env("MANDATE_STORE", "store.db"), "embedded store to load into; created empty if missing (env MANDATE_STORE)")
	if err := parseFlags(fs, args[1:], 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"store import: name one JSON file to import"}
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	_, statErr := os.Stat(*path)
	created := os.IsNotExist(statErr)
	st, err := store.Open(*path)
	if err != nil {
		return err
	}
	defer st.Close()
	stats, err := st.Import(ctx, data)
	if err != nil {
		if created {
			// Nothing was imported: leave no empty store behind either.
			st.Close()
			for _, f := range []string{*path, *path + "-wal", *path + "-shm", *path + "-wlock"} {
				os.Remove(f)
			}
		}
		return fmt.Errorf("store import: nothing was imported: %s", mandate.ErrorMessage(err))
	}
	fmt.Fprintf(stdout, "imported %d customers and %d orders into %s\n", stats.Customers, stats.Orders, *path)
	return nil
}
