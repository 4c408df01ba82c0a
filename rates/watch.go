package rates

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mandatehq/mandate/internal/filewatch"
)

// Watcher reloads the rates when the file changes, like policy.Watcher
// does for the policy: it watches the directory (editors and `mandate rates
// set` replace the file by renaming), waits Debounce for a burst of events
// to end, and swaps in the new rates only if they load. A broken edit, or a
// deleted file, leaves the last good rates live and logs why.
type Watcher struct {
	Live *Live
	Path string
	// Logger receives one line per reload or failure; nil discards.
	Logger *slog.Logger
	// Debounce is how long to wait for more events after one; 0 is 100 ms.
	Debounce time.Duration
	// Record, when set, is called with new rates before they are swapped
	// in (the database's record of the live rates); if it fails, the last
	// good rates stay live, and Run tries again after RetryRecord, as
	// policy.Watcher does: rates nobody knows are live are never used.
	Record func(*Table) error
	// RetryRecord is how long Run waits to try a failed Record again; 0 is
	// one second.
	RetryRecord time.Duration

	mu sync.Mutex // one reload at a time
}

// Run watches until ctx is done. It returns an error only if watching could
// not start. The file need not exist yet: creating it is a change.
func (w *Watcher) Run(ctx context.Context) error {
	// A file read at start may have been saved again before the watch
	// began: check it once the watch is in place (filewatch.RunChecked).
	// With no file yet (the embedded rates), there is nothing to catch up
	// with, and a check would only log that it is missing.
	watch := filewatch.Run
	if _, err := os.Stat(w.Path); err == nil {
		watch = filewatch.RunChecked
	}
	if err := watch(ctx, []string{w.Path}, w.Debounce, w.logger(), func() time.Duration {
		// Reload logs its own outcome. A broken file waits for the next
		// edit; rates that could not be recorded are tried again.
		var re *recordError
		if err := w.Reload(); errors.As(err, &re) {
			if w.RetryRecord > 0 {
				return w.RetryRecord
			}
			return time.Second
		}
		return 0
	}); err != nil {
		return fmt.Errorf("rates watcher: %w", err)
	}
	return nil
}

// Reload reads the file and swaps in the rates it holds if they load and
// differ from the live ones. On error the live rates are unchanged.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	log := w.logger()
	old := w.Live.Table()
	b, err := os.ReadFile(w.Path)
	if err != nil {
		log.Error("rates not reloaded; the last good rates stay live", "err", err, "version", old.Version)
		return err
	}
	t, err := Parse(w.Path, b)
	if err != nil {
		log.Error("rates not reloaded; the last good rates stay live", "problem", err.Error(), "version", old.Version)
		return err
	}
	if t.Version == old.Version {
		return nil
	}
	if t.Base != old.Base {
		// The windows of limits over time count money in the base
		// currency, so a new base would start them from zero in the middle
		// of a window, and every base-currency limit in the policy would
		// mean another amount: an agent could refund its limit again.
		// That takes a deliberate restart, never a saved file.
		err := fmt.Errorf("%s: the base currency changed from %s to %s: a running server keeps %s; restart it to change the base (the windows of limits over time then start afresh, and the policy's base-currency limits must be written in %s)",
			w.Path, old.Base, t.Base, old.Base, t.Base)
		log.Error("rates not reloaded; the last good rates stay live", "problem", err.Error(), "version", old.Version)
		return err
	}
	if w.Record != nil {
		if err := w.Record(t); err != nil {
			log.Error("rates not reloaded; the last good rates stay live: they could not be recorded as the live rates; will try again", "err", err, "version", t.Version, "live_here", old.Version)
			return &recordError{err}
		}
	}
	w.Live.Swap(t)
	log.Info("rates reloaded", "version", t.Version, "previous", old.Version, "base", t.Base, "currencies", len(t.Currencies()))
	return nil
}

// recordError is a Reload that failed because Record did.
type recordError struct{ err error }

func (e *recordError) Error() string { return "rates watcher: record the rates: " + e.err.Error() }
func (e *recordError) Unwrap() error { return e.err }

func (w *Watcher) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}

// WriteFile replaces path with data atomically: a temporary file in the
// same directory, synced, then renamed over it, so a running server never
// reads half a file.
func WriteFile(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
