package rates_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/rates"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestWatcherReloads: a saved edit goes live; a broken edit keeps the last
// good rates and is logged; a file created where there was none is seen.
func TestWatcherReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rates.csv")
	first := []byte("base, USD\nEUR, 1.0842\n")
	if err := rates.WriteFile(path, first); err != nil {
		t.Fatal(err)
	}
	tab, err := rates.Parse(path, first)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	w := &rates.Watcher{Live: rates.NewLive(tab), Path: path, Logger: slog.New(slog.NewTextHandler(logs, nil)), Debounce: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// save writes data until ok holds: rewriting also covers a watch that
	// had not started yet when the first write happened.
	save := func(data []byte, what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; log:\n%s", what, logs)
			}
			if err := rates.WriteFile(path, data); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	save([]byte("base, USD\nEUR, 1.2000\n"), "EUR at 1.2000", func() bool {
		r, _ := w.Live.Table().Rate("EUR")
		return r == "1.2000"
	})
	good := w.Live.Table().Version

	save([]byte("base, USD\nEUR, 1,2\n"), "the broken edit to be logged", func() bool {
		return strings.Contains(logs.String(), "rates not reloaded; the last good rates stay live")
	})
	if w.Live.Table().Version != good {
		t.Fatalf("a broken edit replaced the live rates")
	}

	// A new base currency would restart the windows of limits over time
	// and change what every base-currency limit means: a running server
	// keeps its base (a review refunded 550 USD against a 500 limit after
	// such an edit).
	save([]byte("base, EUR\nUSD, 0.9223\n"), "the base change to be refused", func() bool {
		return strings.Contains(logs.String(), "the base currency changed from USD to EUR")
	})
	if got := w.Live.Table(); got.Version != good || got.Base != "USD" {
		t.Fatalf("a base change went live: version %s, base %s", got.Version, got.Base)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	save([]byte("base, USD\nEUR, 1.0900\nGBP, 1.2650\n"), "the recreated file", func() bool {
		_, ok := w.Live.Table().Rate("GBP")
		return ok
	})
}

// TestReloadRecordsBeforeSwap: new rates go live in the process only once
// Record (the database's record of the live rates) has taken them; if it
// fails, the last good rates stay live, so a process never converts with
// rates that approvals elsewhere would not accept as the live ones.
func TestReloadRecordsBeforeSwap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rates.csv")
	first := []byte("base, USD\nEUR, 1.0842\n")
	tab, err := rates.Parse(path, first)
	if err != nil {
		t.Fatal(err)
	}
	var recorded []string
	fail := true
	w := &rates.Watcher{Live: rates.NewLive(tab), Path: path, Record: func(t *rates.Table) error {
		if fail {
			return os.ErrPermission
		}
		recorded = append(recorded, t.Version+" "+t.Text())
		return nil
	}}
	next := []byte("base, USD\nEUR, 1.2000\n")
	if err := rates.WriteFile(path, next); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); err == nil || w.Live.Table().Version != tab.Version {
		t.Fatalf("Reload with a failing Record = %v, live version %s; want an error and %s still live", err, w.Live.Table().Version, tab.Version)
	}
	fail = false
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	want, _ := rates.Parse(path, next)
	if got := w.Live.Table().Version; got != want.Version || len(recorded) != 1 || recorded[0] != want.Version+" "+string(next) {
		t.Fatalf("live version %s, recorded %q; want %s recorded with its text, then live", got, recorded, want.Version)
	}
}

// TestWatcherRetriesRecord: an edit whose Record fails (the database busy
// or briefly unwritable) is not dropped: Run tries again every RetryRecord,
// the last good rates stay live meanwhile, and the edit goes live once
// Record works, as policy.Watcher does; each failure is logged.
func TestWatcherRetriesRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rates.csv")
	first := []byte("base, USD\nEUR, 1.0842\n")
	if err := rates.WriteFile(path, first); err != nil {
		t.Fatal(err)
	}
	tab, err := rates.Parse(path, first)
	if err != nil {
		t.Fatal(err)
	}
	next := []byte("base, USD\nEUR, 2.0000\n")
	want, err := rates.Parse(path, next)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		failures int
		recorded []string
	)
	logs := &syncBuf{}
	w := &rates.Watcher{Live: rates.NewLive(tab), Path: path, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Debounce: 10 * time.Millisecond, RetryRecord: 10 * time.Millisecond,
		Record: func(r *rates.Table) error {
			mu.Lock()
			defer mu.Unlock()
			if failures < 3 {
				failures++
				return errors.New("database is locked")
			}
			recorded = append(recorded, r.Version)
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// RunChecked reloads once the watch is in place, so this edit is seen
	// even if it lands before the watch starts.
	if err := rates.WriteFile(path, next); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute) // only stops a hung test
	for w.Live.Table().Version != want.Version {
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("after %d failed Records the edit never went live; still %s\nlog:\n%s", failures, w.Live.Table().Version, logs)
		}
		live := w.Live.Table().Version // before failures: they only grow
		mu.Lock()
		failing := failures < 3
		mu.Unlock()
		if failing && live != tab.Version {
			t.Fatal("the edit went live while Record was failing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if failures != 3 || !slices.Equal(recorded, []string{want.Version}) {
		t.Fatalf("%d failures, recorded %v; want 3 failures, then the edit recorded once", failures, recorded)
	}
	if n := strings.Count(logs.String(), "will try again"); n != 3 {
		t.Fatalf("logged %d retries, want 3:\n%s", n, logs)
	}
}
