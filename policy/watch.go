package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mandatehq/mandate/internal/filewatch"
)

// Watcher reloads the policy when an admin saves model.conf or policy.csv.
// It watches the directories holding them, not the files, because editors
// save by writing a new file and renaming it over the old one, which ends a
// watch on the file itself. A burst of events within Debounce is one reload.
//
// A reload builds a whole new Policy with Load and swaps it into Engine only
// if it loads; a broken file leaves the last good policy live and logs every
// problem with file:line. Decisions already running finish on the policy
// they started with.
type Watcher struct {
	Engine *Engine
	// ModelPath and PolicyPath are the files to watch. An empty ModelPath
	// means Model is used as is and not watched (the embedded model).
	ModelPath  string
	PolicyPath string
	Model      Source
	// Logger receives one line per reload or failure; nil discards.
	Logger *slog.Logger
	// Debounce is how long to wait for more events after one; 0 is 100 ms.
	Debounce time.Duration
	// OnSwap, when set, is called after a new policy went live, e.g. to tell
	// clients that the list of tools they may call changed.
	OnSwap func(old, new *Policy)
	// OnFail, when set, is called with the error of every reload that
	// left the last good policy live, for metrics.
	OnFail func(err error)
	// Record, when set, is called with a policy that loaded and differs
	// from the live one, before it goes live: the process records the
	// version it is about to decide under, so that every process sharing
	// the database knows the live policy (storage.RecordPolicy). If Record
	// fails, the new policy does not go live, and Run tries again after
	// RetryRecord; a policy nobody knows is live is never decided under.
	Record func(p *Policy, model, policy Source) error
	// RetryRecord is how long Run waits to try a failed Record again; 0 is
	// one second.
	RetryRecord time.Duration

	mu sync.Mutex // one reload at a time
}

// Run watches until ctx is done. It returns an error only if watching could
// not start.
func (w *Watcher) Run(ctx context.Context) error {
	// RunChecked: the files were read (and recorded as live) before the
	// watch began; a save in between is caught by one reload once it is in
	// place, which swaps nothing if the files are what the engine holds.
	err := filewatch.RunChecked(ctx, []string{w.ModelPath, w.PolicyPath}, w.Debounce, w.logger(), func() time.Duration {
		// Reload logs its own outcome. A broken file waits for the next
		// edit; a policy that could not be recorded is tried again.
		var re *recordError
		err := w.Reload()
		if err != nil && w.OnFail != nil {
			w.OnFail(err)
		}
		if errors.As(err, &re) {
			if w.RetryRecord > 0 {
				return w.RetryRecord
			}
			return time.Second
		}
		return 0
	})
	if err != nil {
		return fmt.Errorf("policy watcher: %w", err)
	}
	return nil
}

// Reload reads the files, and swaps in the policy they hold if it loads and
// differs from the live one. It returns the load error, if any, after
// logging it; the live policy is then unchanged.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	log := w.logger()
	m := w.Model
	if w.ModelPath != "" {
		b, err := os.ReadFile(w.ModelPath)
		if err != nil {
			log.Error("policy not reloaded; the last good policy stays live", "err", err)
			return err
		}
		m = Source{Name: w.ModelPath, Data: b}
	}
	b, err := os.ReadFile(w.PolicyPath)
	if err != nil {
		log.Error("policy not reloaded; the last good policy stays live", "err", err)
		return err
	}
	old := w.Engine.Policy()
	ps := Source{Name: w.PolicyPath, Data: b}
	p, err := Load(m, ps)
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) {
			for _, problem := range le.Problems {
				log.Error("policy not reloaded; the last good policy stays live", "problem", problem, "version", old.Version)
			}
		} else {
			log.Error("policy not reloaded; the last good policy stays live", "err", err, "version", old.Version)
		}
		return err
	}
	if p.Version == old.Version {
		log.Debug("policy files touched but unchanged", "version", p.Version)
		return nil
	}
	if w.Record != nil {
		if err := w.Record(p, m, ps); err != nil {
			log.Error("policy not reloaded: it could not be recorded as the live policy; will try again", "err", err, "version", p.Version, "live_here", old.Version)
			return &recordError{err}
		}
	}
	w.Engine.Swap(p)
	log.Info("policy reloaded", "version", p.Version, "previous", old.Version, "rules", len(p.Rules), "grants", len(p.Grants))
	if w.OnSwap != nil {
		w.OnSwap(old, p)
	}
	return nil
}

// recordError is a Reload that failed because Record did.
type recordError struct{ err error }

func (e *recordError) Error() string { return "policy watcher: record the policy: " + e.err.Error() }
func (e *recordError) Unwrap() error { return e.err }

func (w *Watcher) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}
