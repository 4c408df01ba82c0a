package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/mandatehq/mandate/storage"
)

const storageUsage = `Usage:
  mandate storage migrate --from FILE|URL --to URL|FILE [--audit-key FILE]
      copy every table of one Mandate database into another, new one (a
      SQLite trail into PostgreSQL, or back), verifying the audit chain
      before and after; stop the servers on --from first; a keyed trail
      needs its audit key (or MANDATE_AUDIT_KEY)
`

// runStorage is the `mandate storage` command group: Mandate's own
// database as a whole.
func runStorage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("storage", storageUsage, args, stdout, stderr); done {
		return err
	}
	switch args[0] {
	case "migrate":
		return runStorageMigrate(ctx, args[1:], stdout, stderr)
	}
	return unknownSubcommand("storage", storageUsage, args[0], stderr)
}

// runStorageMigrate copies a database into an empty one (storage.Copy).
// The destination's tables are created by opening it; a PostgreSQL
// database must exist (createdb). A failed copy commits nothing, so it can
// be run again.
func runStorageMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("storage migrate", "mandate storage migrate --from mandate.db --to postgres://USER@HOST/DB", stderr)
	from := fs.String("from", "", "the database to copy: a SQLite file or a postgres:// URL")
	to := fs.String("to", "", "the empty database to copy into: a postgres:// URL or a new SQLite file")
	// Both ends with the key: the copy verifies keyed records at each end,
	// and the destination refuses to be opened later without it.
	auditKey := auditKeyFlag(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		return usageError{"storage migrate: give both --from and --to"}
	}
	if *from == *to {
		return usageError{"storage migrate: --from and --to name the same database"}
	}
	src, err := openExistingDB(ctx, *from, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer src.Close()
	if !storage.IsURL(*to) {
		if _, err := os.Stat(*to); err == nil {
			return fmt.Errorf("storage migrate: %s exists: copy into a new file", *to)
		}
	}
	dst, err := storage.Open(ctx, *to, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer dst.Close()
	rep, err := storage.Copy(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("storage migrate: %w", err)
	}
	names := make([]string, 0, len(rep.Tables))
	for t := range rep.Tables {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		fmt.Fprintf(stdout, "%-16s %d rows\n", t, rep.Tables[t])
	}
	fmt.Fprintf(stdout, "ok: %d audit records copied from %s to %s; the chain verifies at both ends, head %s\n",
		rep.Records, storage.Redact(*from), storage.Redact(*to), rep.Head)
	return nil
}
