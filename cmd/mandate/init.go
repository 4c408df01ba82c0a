package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mandatehq/mandate"
)

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", "mandate init [--dir DIR] [--force]", stderr)
	dir := fs.String("dir", ".", "directory to write model.conf, policy.csv and rates.csv into")
	force := fs.Bool("force", false, "overwrite existing files")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{{"model.conf", mandate.DefaultModel}, {"policy.csv", mandate.DefaultPolicy}, {"rates.csv", mandate.DefaultRates}}
	for _, f := range files {
		path := filepath.Join(*dir, f.name)
		if _, err := os.Stat(path); err == nil && !*force {
			return fmt.Errorf("init: %s exists; use --force to overwrite it", path)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		path := filepath.Join(*dir, f.name)
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", path)
	}
	fmt.Fprintln(stdout, "Edit policy.csv, and put your own exchange rates in rates.csv (mandate rates set EUR 1.0842); `mandate serve` picks these files up from the current directory.")
	return nil
}
