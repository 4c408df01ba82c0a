package store

import (
	"context"
	_ "embed"
	"errors"
	"io/fs"
	"os"
)

// DemoData is the sample shop a new install starts with, in Import's format.
// Tests and examples rely on its fixtures: cus_ada with ord_1001 (processing,
// 120.00 USD) to ord_1004, cus_grace (a two-day-old account), cus_marie with
// a partially refunded EUR order.
//
//go:embed demo.json
var DemoData []byte

// OpenSeeded opens the database at path. When the file does not exist yet it
// creates it, seeds DemoData rebased to the current time (see Seed) and
// reports seeded; an existing file is opened as is, so restarts keep what
// agents did.
func OpenSeeded(ctx context.Context, path string) (*Store, bool, error) {
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, dbError(err)
	}
	isNew := err != nil
	s, err := Open(path)
	if err != nil {
		return nil, false, err
	}
	if !isNew {
		return s, false, nil
	}
	// Another process may have created the same new file a moment ago: seed
	// only an empty store so the two do not collide.
	stats, err := s.load(ctx, DemoData, true, true)
	if err != nil {
		s.Close()
		return nil, false, err
	}
	return s, stats.Customers > 0, nil
}
