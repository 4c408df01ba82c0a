package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
	var stats store.ImportStats
	if _, statErr := os.Stat(*path); os.IsNotExist(statErr) {
		stats, err = importNew(ctx, *path, data)
	} else {
		stats, err = importInto(ctx, *path, data)
	}
	if err != nil {
		return fmt.Errorf("store import: nothing was imported: %s", mandate.ErrorMessage(err))
	}
	fmt.Fprintf(stdout, "imported %d customers and %d orders into %s\n", stats.Customers, stats.Orders, *path)
	return nil
}

// importInto imports data into the existing store at path, in one
// transaction: all or nothing.
func importInto(ctx context.Context, path string, data []byte) (store.ImportStats, error) {
	st, err := store.Open(path)
	if err != nil {
		return store.ImportStats{}, err
	}
	defer st.Close()
	return st.Import(ctx, data)
}

// importNew creates the store at path with data in it. It builds the store
// in a file of its own beside path and links it into place only when
// whole: a refused import leaves nothing behind, and a store that another
// process (a serve seeding demo data) created at path meanwhile is refused,
// never removed or overwritten.
func importNew(ctx context.Context, path string, data []byte) (store.ImportStats, error) {
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".import-"+hex.EncodeToString(suffix[:]))
	// Created here, exclusively, with the mode SQLite would give it.
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return store.ImportStats{}, err
	}
	f.Close()
	defer func() {
		for _, f := range []string{tmp, tmp + "-wal", tmp + "-shm", tmp + "-wlock"} {
			os.Remove(f)
		}
	}()
	st, err := store.Open(tmp)
	if err != nil {
		return store.ImportStats{}, err
	}
	stats, err := st.Import(ctx, data)
	// Closing the last connection checkpoints the WAL into the file.
	if cerr := st.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return store.ImportStats{}, err
	}
	if fi, err := os.Stat(tmp + "-wal"); err == nil && fi.Size() > 0 {
		return store.ImportStats{}, fmt.Errorf("the new store could not be completed (its write-ahead log was not checkpointed)")
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return store.ImportStats{}, fmt.Errorf("%s was created by another process during the import; run the import again to load into it", path)
		}
		return store.ImportStats{}, err
	}
	return stats, nil
}
