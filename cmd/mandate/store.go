package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend/store"
)

func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return runStoreServe(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "import" {
		return usageError{"store: use `mandate store import --store FILE DATA.json` or `mandate store serve --store FILE --listen ADDR`"}
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
	st, err := store.Open(*path)
	if err != nil {
		return err
	}
	defer st.Close()
	stats, err := st.Import(ctx, data)
	if err != nil {
		return fmt.Errorf("store import: nothing was imported: %s", mandate.ErrorMessage(err))
	}
	fmt.Fprintf(stdout, "imported %d customers and %d orders into %s\n", stats.Customers, stats.Orders, *path)
	return nil
}
