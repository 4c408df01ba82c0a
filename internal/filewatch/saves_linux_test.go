package filewatch

// Every common way of saving a watched file, against the real kernel:
// each must reach changed with the new content, since a missed save leaves
// a server deciding under an old policy until the next one it sees.

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// watchFile runs Run on path and returns a channel of the file's content at
// each call of changed.
func watchFile(t *testing.T, path string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := Run(ctx, []string{path}, 30*time.Millisecond, nil, func() time.Duration {
			b, _ := os.ReadFile(path)
			got <- string(b)
			return 0
		}); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(150 * time.Millisecond) // let the watch start
	return got
}

func expect(t *testing.T, got <-chan string, want string) {
	t.Helper()
	deadline := time.After(2 * time.Second)
	last := "<no reload>"
	for {
		select {
		case s := <-got:
			last = s
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("missed save: last reload read %q, want %q", last, want)
		}
	}
}

func sh(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", script, err, out)
	}
}

func TestSaves(t *testing.T) {
	cases := []struct {
		name, script, want string
	}{
		{"in place >", "echo v2 > policy.csv", "v2\n"},
		{"append >>", "echo v2 >> policy.csv", "v1\nv2\n"},
		{"atomic rename", "echo v2 > .tmp && mv .tmp policy.csv", "v2\n"},
		{"sed -i", "sed -i s/v1/v2/ policy.csv", "v2\n"},
		{"cp over", "echo v2 > src && cp src policy.csv", "v2\n"},
		{"rename away and back", "mv policy.csv x && echo v2 > x && mv x policy.csv", "v2\n"},
		{"delete and recreate", "rm policy.csv && sleep 0.2 && echo v2 > policy.csv", "v2\n"},
		{"truncate tool", "truncate -s 0 policy.csv", ""},
		{"hard link over", "echo v2 > y && ln -f y policy.csv", "v2\n"},
		{"symlink over", "echo v2 > y && ln -sf y policy.csv", "v2\n"},
		{"delete and copy", "echo v2 > y && rm policy.csv && cp y policy.csv", "v2\n"},
		{"dd notrunc", "printf v2 | dd of=policy.csv conv=notrunc 2>/dev/null", "v2\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "policy.csv")
			os.WriteFile(p, []byte("v1\n"), 0o644)
			got := watchFile(t, p)
			sh(t, dir, tc.script)
			expect(t, got, tc.want)
		})
	}
}

func TestSaveTouchReloadsSameContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	os.WriteFile(p, []byte("v1\n"), 0o644)
	got := watchFile(t, p)
	sh(t, dir, "touch policy.csv")
	expect(t, got, "v1\n")
}

// Kubernetes ConfigMap: policy.csv -> ..data/policy.csv, ..data -> ..v1;
// an update writes ..v2, points ..data_tmp at it and renames it over ..data.
func TestSaveConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	sh(t, dir, "mkdir ..v1 && echo v1 > ..v1/policy.csv && ln -s ..v1 ..data && ln -s ..data/policy.csv policy.csv")
	p := filepath.Join(dir, "policy.csv")
	got := watchFile(t, p)
	sh(t, dir, "mkdir ..v2 && echo v2 > ..v2/policy.csv && ln -s ..v2 ..data_tmp && mv -T ..data_tmp ..data && rm -rf ..v1")
	expect(t, got, "v2\n")
}

// TestSaveDirectory: the watched directory itself replaced (a deploy that
// swaps the directory) or deleted and made again (rm -rf conf, then tar x
// or git checkout): the name is watched again, and the new file is read.
func TestSaveDirectory(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"replaced", "mkdir conf.new && echo v2 > conf.new/policy.csv && mv conf conf.old && mv conf.new conf"},
		{"recreated", "rm -rf conf && sleep 0.3 && mkdir conf && echo v2 > conf/policy.csv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "conf")
			os.Mkdir(dir, 0o755)
			p := filepath.Join(dir, "policy.csv")
			os.WriteFile(p, []byte("v1\n"), 0o644)
			got := watchFile(t, p)
			sh(t, root, tc.script)
			expect(t, got, "v2\n")
		})
	}
}

// Two paths naming one directory (one through a symlink): inotify gives both
// the same watch descriptor.
func TestSaveSameDirectoryTwoNames(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "conf")
	os.Mkdir(dir, 0o755)
	os.Symlink(dir, filepath.Join(root, "link"))
	model := filepath.Join(dir, "model.conf")
	pol := filepath.Join(root, "link", "policy.csv")
	os.WriteFile(model, []byte("m1\n"), 0o644)
	os.WriteFile(pol, []byte("p1\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 100)
	go Run(ctx, []string{model, pol}, 30*time.Millisecond, nil, func() time.Duration {
		b, _ := os.ReadFile(model)
		c, _ := os.ReadFile(pol)
		got <- string(b) + string(c)
		return 0
	})
	time.Sleep(150 * time.Millisecond)
	os.WriteFile(model, []byte("m2\n"), 0o644)
	expect(t, got, "m2\np1\n")
	os.WriteFile(pol, []byte("p2\n"), 0o644)
	expect(t, got, "m2\np2\n")
}

func TestSaveBurstLastWins(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	os.WriteFile(p, []byte("v0\n"), 0o644)
	got := watchFile(t, p)
	for i := 1; i <= 50; i++ {
		os.WriteFile(p, []byte("v"+string(rune('0'+i%10))+"x\n"), 0o644)
	}
	os.WriteFile(p, []byte("last\n"), 0o644)
	expect(t, got, "last\n")
}

func TestOtherFilesNoReload(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	os.WriteFile(p, []byte("v1\n"), 0o644)
	got := watchFile(t, p)
	for i := range 200 {
		q := filepath.Join(dir, "other")
		os.WriteFile(q, []byte{byte(i)}, 0o644)
		os.Rename(q, q+"2")
		os.Remove(q + "2")
	}
	select {
	case s := <-got:
		t.Fatalf("reloaded on other files: %q", s)
	case <-time.After(300 * time.Millisecond):
	}
}

func countFDs() int {
	es, _ := os.ReadDir("/proc/self/fd")
	return len(es)
}

func TestNoLeaks(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	os.WriteFile(p, []byte("v1\n"), 0o644)
	runtime.GC()
	fd0, g0 := countFDs(), runtime.NumGoroutine()
	var wg sync.WaitGroup
	for range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		wg.Add(1)
		go func() {
			defer wg.Done()
			Run(ctx, []string{p}, time.Millisecond, nil, func() time.Duration { return 0 })
		}()
		time.Sleep(5 * time.Millisecond)
		os.WriteFile(p, []byte("v2\n"), 0o644) // a pending event when closed
		cancel()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	if fd1, g1 := countFDs(), runtime.NumGoroutine(); fd1 > fd0 || g1 > g0+1 {
		t.Fatalf("fds %d -> %d, goroutines %d -> %d", fd0, fd1, g0, g1)
	}
	// a watch that fails to start on the second directory
	fd0 = countFDs()
	for range 20 {
		if _, err := watchDirs([]string{dir, filepath.Join(dir, "nope")}); err == nil {
			t.Fatal("no error")
		}
	}
	if fd1 := countFDs(); fd1 > fd0 {
		t.Fatalf("fds leaked on failed start %d -> %d", fd0, fd1)
	}
}

// TestRunCheckedCatchesUp: RunChecked calls changed once after the watch is
// in place, with nothing saved since, so a caller that read the file before
// watching catches a save made in between; Run does not.
func TestRunCheckedCatchesUp(t *testing.T) {
	for _, c := range []struct {
		name  string
		run   func(context.Context, []string, time.Duration, *slog.Logger, func() time.Duration) error
		calls int
	}{
		{"RunChecked", RunChecked, 1},
		{"Run", Run, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy.csv")
			if err := os.WriteFile(path, []byte("saved before the watch\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var mu sync.Mutex
			calls := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				if err := c.run(ctx, []string{path}, 20*time.Millisecond, nil, func() time.Duration {
					mu.Lock()
					calls++
					mu.Unlock()
					return 0
				}); err != nil {
					t.Error(err)
				}
			}()
			time.Sleep(300 * time.Millisecond) // far past the debounce
			cancel()
			<-done
			if calls != c.calls {
				t.Fatalf("%s called changed %d times with no save, want %d", c.name, calls, c.calls)
			}
		})
	}
}

// TestSaveCreatedWaitsForClose: a file created anew and written slowly
// (`rm f; cat > f`, a copy over a network share) is read only once its
// writer closes it; what is on disk before is a prefix, which may parse.
func TestSaveCreatedWaitsForClose(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	os.WriteFile(p, []byte("v1\n"), 0o644)
	logs := make(chan string, 100)
	got := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, []string{p}, 30*time.Millisecond, slog.New(msgHandler(logs)), func() time.Duration {
			b, _ := os.ReadFile(p)
			got <- string(b)
			return 0
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(150 * time.Millisecond) // let the watch start

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("half")
	// The reload falls due while the file is open: Run says it waits.
	for waiting := false; !waiting; {
		select {
		case s := <-got:
			if s != "" { // the removal alone may be seen first: no file
				t.Fatalf("read %q while the writer had the file open", s)
			}
		case msg := <-logs:
			waiting = strings.Contains(msg, "waiting for its writer to close it")
		case <-time.After(time.Minute):
			t.Fatal("no reload fell due after the file was created")
		}
	}
	f.WriteString(" and the rest\n")
	f.Close()
	expect(t, got, "half and the rest\n")
}

// TestSaveCreatedNotClosed: a file created and never seen closed (its
// writer keeps it open) is still read, once it has stayed unchanged for
// settle (TestWritersWait checks that one still changing is not).
func TestSaveCreatedNotClosed(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.csv")
	got := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, []string{p}, 10*time.Millisecond, 200*time.Millisecond, nil, func() time.Duration {
			b, _ := os.ReadFile(p)
			got <- string(b)
			return 0
		}, false)
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(150 * time.Millisecond) // let the watch start
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("v2\n")
	select {
	case s := <-got:
		if s != "v2\n" {
			t.Fatalf("read %q, want the file as written", s)
		}
	case <-time.After(time.Minute):
		t.Fatal("a file created and left open was never read")
	}
}

// msgHandler is a slog.Handler that sends each message to ch, or drops it
// if ch is full.
type msgHandler chan<- string

func (h msgHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h msgHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h msgHandler) WithGroup(string) slog.Handler            { return h }
func (h msgHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h <- r.Message:
	default:
	}
	return nil
}
