package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/mandatehq/mandate/storage"
)

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"audit: name a subcommand: export"}
	}
	switch args[0] {
	case "export":
		return runAuditExport(ctx, args[1:], stdout, stderr)
	}
	return usageError{fmt.Sprintf("audit: unknown subcommand %q; use export", args[0])}
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit export", "mandate audit export [--db FILE]", stderr)
	dbPath := fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's database (env MANDATE_DB)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := db.Records(ctx, storage.Filter{}, func(r *storage.Record) error { return enc.Encode(r) }); err != nil {
		return err
	}
	return w.Flush()
}
