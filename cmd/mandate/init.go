package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mandatehq/mandate"
)

// runInit writes the files that are missing and keeps the ones that exist,
// so that a directory with only one of them still gets the other two (an
// edit appended to a policy.csv init did not write would otherwise replace
// the whole shipped policy); --force overwrites all three.
func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", "mandate init [--dir DIR] [--force]", stderr)
	dir := fs.String("dir", ".", "directory to write model.conf, policy.csv and rates.csv into; files already there are kept")
	force := fs.Bool("force", false, "overwrite existing files with the defaults")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{{"model.conf", mandate.DefaultModel}, {"policy.csv", mandate.DefaultPolicy}, {"rates.csv", mandate.DefaultRates}}
	exists := make([]bool, len(files))
	for i, f := range files {
		path := filepath.Join(*dir, f.name)
		_, err := os.Stat(path)
		switch {
		case err == nil:
			exists[i] = true
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	kept := 0
	for i, f := range files {
		path := filepath.Join(*dir, f.name)
		if exists[i] && !*force {
			fmt.Fprintln(stdout, "kept", path, "(it exists; --force overwrites it)")
			kept++
			continue
		}
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", path)
	}
	if kept == len(files) {
		return nil
	}
	fmt.Fprintln(stdout, "Edit policy.csv, and put your own exchange rates in rates.csv (mandate rates set EUR 1.0842); `mandate serve` picks these files up from the current directory.")
	return nil
}
