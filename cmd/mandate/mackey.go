package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mandatehq/mandate/storage"
)

// auditKeyHelp is the --audit-key flag's help, the same on every command.
const auditKeyHelp = "the audit key `FILE` (from mandate audit mackey): records are chained with its HMAC so nobody without it can forge or rewrite them; every process sharing the database needs the same key (env MANDATE_AUDIT_KEY)"

// auditKeyFlag registers --audit-key on a command that writes or verifies
// the audit trail.
func auditKeyFlag(fs *flag.FlagSet) *string {
	return fs.String("audit-key", env("MANDATE_AUDIT_KEY", ""), auditKeyHelp)
}

// runAuditMackey writes a new audit key file. It never overwrites one: a
// key replaced by mistake leaves every record it keyed unverifiable.
func runAuditMackey(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit mackey", "mandate audit mackey --out FILE", stderr)
	out := fs.String("out", "", "where to write the new key (mode 0600; an existing file is never overwritten)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"audit mackey: say where to write the key with --out FILE"}
	}
	secret := make([]byte, storage.MinAuditKeyBytes)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("audit mackey: %w", err)
	}
	k, err := storage.NewAuditKey(secret)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("audit mackey: %s exists; it may be the key a trail was written with, so it is not replaced: choose another --out", *out)
	} else if err != nil {
		return fmt.Errorf("audit mackey: %w", err)
	}
	_, err = fmt.Fprintln(f, hex.EncodeToString(secret))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		return fmt.Errorf("audit mackey: %w", err)
	}
	fmt.Fprintf(stdout, "wrote audit key %s to %s (mode 0600)\n", k.ID(), *out)
	fmt.Fprintf(stdout, "give it to every process that writes the database (--audit-key %s or MANDATE_AUDIT_KEY), and keep a copy apart from the database: without it the keyed records cannot be verified\n", *out)
	return nil
}
