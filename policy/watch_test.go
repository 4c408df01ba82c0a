package policy_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

// Three versions of a policy: A lets demo-agent refund 30.00, B gives
// demo-agent its own refund rule that denies, and broken has an effect typo
// on line watchBrokenLine.
var (
	watchPolicyA      = explainPolicy
	watchPolicyB      = watchPolicyA + "p, demo-agent, refund_order, true, deny\n"
	watchPolicyBroken = watchPolicyA + "p, demo-agent, refund_order, true, alow\n"
	watchBrokenLine   = strings.Count(watchPolicyA, "\n") + 1
	watchRefund       = policy.Request{Agent: "demo-agent", Tool: "refund_order", Attrs: map[string]any{
		"amount": 30.0, "currency": "USD", "order_total": 120.0, "order_refunded": 0.0,
		"order_refundable": 120.0, "order_status": "processing", "customer_age_days": 600.0,
	}}
)

// watchLog is a log sink safe for the watcher's goroutine and the test's.
type watchLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *watchLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *watchLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// watchSetup writes model.conf and policy A into a temp dir and returns a
// watcher over them, with an engine holding A.
func watchSetup(t *testing.T) (*policy.Watcher, *watchLog, string) {
	t.Helper()
	dir := t.TempDir()
	modelPath, policyPath := filepath.Join(dir, "model.conf"), filepath.Join(dir, "policy.csv")
	watchWrite(t, modelPath, string(mandate.DefaultModel))
	watchWrite(t, policyPath, watchPolicyA)
	p, err := policy.Load(policy.Source{Name: modelPath, Data: mandate.DefaultModel}, policy.Source{Name: policyPath, Data: []byte(watchPolicyA)})
	if err != nil {
		t.Fatal(err)
	}
	logs := &watchLog{}
	w := &policy.Watcher{
		Engine: policy.NewEngine(p), ModelPath: modelPath, PolicyPath: policyPath,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Debounce: 20 * time.Millisecond,
	}
	return w, logs, policyPath
}

func watchWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// watchReplace saves the way editors do: a new file renamed over the old.
func watchReplace(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".swp"
	watchWrite(t, tmp, text)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func watchVersion(text string) string { return policy.Version(mandate.DefaultModel, []byte(text)) }

func watchWait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	// The deadline only stops a hung test: what is checked is that no
	// decision ever sees a half-loaded policy, however slow the machine.
	deadline := time.Now().Add(2 * time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatcherReloadsOnSave(t *testing.T) {
	w, logs, policyPath := watchSetup(t)
	var swaps atomic.Int32
	var lastOld, lastNew atomic.Pointer[policy.Policy]
	w.OnSwap = func(old, new *policy.Policy) {
		lastOld.Store(old)
		lastNew.Store(new)
		swaps.Add(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Let the watch start before the first save.
	time.Sleep(50 * time.Millisecond)
	vA, vB := watchVersion(watchPolicyA), watchVersion(watchPolicyB)

	t.Run("rename over the file swaps in the new policy", func(t *testing.T) {
		watchReplace(t, policyPath, watchPolicyB)
		// OnSwap runs just after the swap: wait for it, not only the swap.
		watchWait(t, "version B", func() bool {
			return w.Engine.Policy().Version == vB && lastNew.Load() != nil && lastNew.Load().Version == vB
		})
		if got := w.Engine.Decide(watchRefund).Effect; got != policy.Deny {
			t.Fatalf("decision under B = %s, want deny", got)
		}
		if lastOld.Load().Version != vA || lastNew.Load().Version != vB {
			t.Fatalf("OnSwap(old=%s, new=%s), want (%s, %s)", lastOld.Load().Version, lastNew.Load().Version, vA, vB)
		}
		if !strings.Contains(logs.String(), "policy reloaded") {
			t.Fatalf("no reload logged:\n%s", logs)
		}
	})
	t.Run("a broken file keeps the last good policy and logs file:line", func(t *testing.T) {
		before := swaps.Load()
		watchWrite(t, policyPath, watchPolicyBroken)
		want := policyPath + ":" + strconv.Itoa(watchBrokenLine) + ": unknown effect"
		watchWait(t, "the load error in the log", func() bool { return strings.Contains(logs.String(), want) })
		if got := w.Engine.Policy().Version; got != vB {
			t.Fatalf("live version = %s, want the last good %s", got, vB)
		}
		if swaps.Load() != before {
			t.Fatalf("OnSwap was called for a broken policy")
		}
	})
	t.Run("fixing the file makes it live", func(t *testing.T) {
		watchWrite(t, policyPath, watchPolicyA)
		watchWait(t, "version A", func() bool { return w.Engine.Policy().Version == vA })
		if got := w.Engine.Decide(watchRefund).Effect; got != policy.Allow {
			t.Fatalf("decision under A = %s, want allow", got)
		}
	})
}

func TestWatcherReloadUnchangedDoesNotSwap(t *testing.T) {
	w, _, policyPath := watchSetup(t)
	called := false
	w.OnSwap = func(_, _ *policy.Policy) { called = true }
	before := w.Engine.Policy()
	watchWrite(t, policyPath, watchPolicyA)
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if called || w.Engine.Policy() != before {
		t.Fatalf("an unchanged file swapped the policy")
	}
}

func TestWatcherMissingFileKeepsPolicy(t *testing.T) {
	w, logs, policyPath := watchSetup(t)
	before := w.Engine.Policy()
	if err := os.Remove(policyPath); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(); err == nil {
		t.Fatal("Reload of a missing file succeeded")
	}
	if w.Engine.Policy() != before {
		t.Fatal("the live policy changed")
	}
	if !strings.Contains(logs.String(), "last good policy stays live") {
		t.Fatalf("nothing logged:\n%s", logs)
	}
}

// TestReloadWhileDeciding reloads many times while goroutines decide: every
// decision must be the one its policy version gives, never a mix (run with
// -race).
func TestReloadWhileDeciding(t *testing.T) {
	w, _, policyPath := watchSetup(t)
	want := map[string]string{watchVersion(watchPolicyA): policy.Allow, watchVersion(watchPolicyB): policy.Deny}
	var stop atomic.Bool
	var seen [2]atomic.Int64 // decisions under A, under B
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				d := w.Engine.Decide(watchRefund)
				effect, ok := want[d.Version]
				if !ok || d.Effect != effect {
					errs <- "version " + d.Version + " decided " + d.Effect + " (" + d.Reason + ")"
					return
				}
				if effect == policy.Allow {
					seen[0].Add(1)
				} else {
					seen[1].Add(1)
				}
			}
		}()
	}
	texts := []string{watchPolicyB, watchPolicyBroken, watchPolicyA}
	// The deadline only stops a hung test: what is checked is that no
	// decision ever sees a half-loaded policy, however slow the machine.
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < 30 || seen[0].Load() == 0 || seen[1].Load() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d reloads: %d decisions under A, %d under B", i, seen[0].Load(), seen[1].Load())
		}
		watchWrite(t, policyPath, texts[i%len(texts)])
		err := w.Reload()
		if (err != nil) != (i%len(texts) == 1) {
			t.Errorf("reload %d: err = %v", i, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// TestWatcherRecordsBeforeSwap: a reloaded policy is recorded before it
// goes live, with the texts and file names it was loaded from; if recording
// fails it does not go live, and Run records and swaps it once recording
// works again.
func TestWatcherRecordsBeforeSwap(t *testing.T) {
	w, _, policyPath := watchSetup(t)
	var (
		mu       sync.Mutex
		fail     = true
		failures int
		recorded []string
	)
	w.RetryRecord = 10 * time.Millisecond
	w.Record = func(p *policy.Policy, m, src policy.Source) error {
		mu.Lock()
		defer mu.Unlock()
		if live := w.Engine.Policy().Version; live == p.Version {
			t.Errorf("Record called after %s went live", p.Version)
		}
		if src.Name != policyPath || string(src.Data) != watchPolicyB || len(m.Data) == 0 {
			t.Errorf("Record got %s (%d bytes), want %s with policy B", src.Name, len(src.Data), policyPath)
		}
		if fail {
			failures++
			return os.ErrPermission
		}
		recorded = append(recorded, p.Version)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(50 * time.Millisecond) // let Run add its watch
	// Reload directly first: a failed record leaves the old policy live.
	watchReplace(t, policyPath, watchPolicyB)
	if err := w.Reload(); err == nil || w.Engine.Policy().Version != watchVersion(watchPolicyA) {
		t.Fatalf("Reload with a failing Record = %v, live %s; want an error and A still live", err, w.Engine.Policy().Version)
	}
	// Run saw the save too, failed to record, and keeps retrying.
	watchWait(t, "Run retrying the record", func() bool { mu.Lock(); defer mu.Unlock(); return failures >= 3 })
	if w.Engine.Policy().Version != watchVersion(watchPolicyA) {
		t.Fatal("B went live without being recorded")
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	watchWait(t, "B recorded and live after a retry", func() bool { return w.Engine.Policy().Version == watchVersion(watchPolicyB) })
	mu.Lock()
	defer mu.Unlock()
	if len(recorded) != 1 || recorded[0] != watchVersion(watchPolicyB) {
		t.Fatalf("recorded %v, want B once", recorded)
	}
}

// TestWatcherWaitsForWriterToClose: a policy saved by a writer that creates
// the file anew (rm, then open, write, close: `rm f; cat > f`, a copy over
// a network share) and pauses half-way is not loaded until the writer
// closes the file. What is on disk half-way here is policy A, which allows
// the refund that the live policy B and the complete new file deny; it
// must never be recorded or decide a call.
func TestWatcherWaitsForWriterToClose(t *testing.T) {
	w, logs, policyPath := watchSetup(t)
	partial := watchPolicyA
	full := watchPolicyB + "# saved again\n"
	var (
		mu       sync.Mutex
		recorded []string
	)
	w.Record = func(p *policy.Policy, _, _ policy.Source) error {
		mu.Lock()
		defer mu.Unlock()
		recorded = append(recorded, p.Version)
		return nil
	}
	watchWrite(t, policyPath, watchPolicyB) // RunChecked loads it once the watch is in place
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	watchWait(t, "B live", func() bool { return w.Engine.Policy().Version == watchVersion(watchPolicyB) })

	if err := os.Remove(policyPath); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(policyPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(partial); err != nil {
		t.Fatal(err)
	}
	// The watcher logs when a reload is due but the file is still open;
	// before that line nothing may have been loaded either.
	watchWait(t, "the watcher to wait for the writer", func() bool {
		return strings.Contains(logs.String(), "waiting for its writer to close it") ||
			w.Engine.Policy().Version != watchVersion(watchPolicyB)
	})
	mu.Lock()
	half := slices.Clone(recorded)
	mu.Unlock()
	if got := w.Engine.Policy().Version; got != watchVersion(watchPolicyB) || len(half) != 1 {
		t.Fatalf("while the file was half-written: live %s, recorded %v; want B still live and only B recorded\nlog:\n%s", got, half, logs)
	}
	if e := w.Engine.Decide(watchRefund).Effect; e != policy.Deny {
		t.Fatalf("while the file was half-written the refund was decided %q, want deny", e)
	}
	if _, err := f.WriteString(full[len(partial):]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	watchWait(t, "the complete file live", func() bool { return w.Engine.Policy().Version == watchVersion(full) })
	mu.Lock()
	defer mu.Unlock()
	if want := []string{watchVersion(watchPolicyB), watchVersion(full)}; !slices.Equal(recorded, want) {
		t.Fatalf("recorded %v, want %v (B at start, then the complete file)", recorded, want)
	}
}
