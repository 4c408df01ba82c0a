package filewatch

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestWritesToOtherFilesDoNotWake checks that writes to a file kept open
// beside the watched one (a database's WAL) reach no watcher, while a save
// of the watched file does: the writes come first, so a watch that asked
// for them would report them before the save.
func TestWritesToOtherFilesDoNotWake(t *testing.T) {
	dir := t.TempDir()
	wal, err := os.Create(filepath.Join(dir, "mandate.db-wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer wal.Close()
	w, err := watchDirs([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	for range 100 {
		if _, err := wal.Write(make([]byte, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	policy := filepath.Join(dir, "policy.csv")
	if err := os.WriteFile(policy, []byte("p, a, b, true, allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case name := <-w.names:
			if name != policy {
				t.Fatalf("the watcher reported %q before the save of %s", name, policy)
			}
			return
		case err := <-w.errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatal("the save of the watched file was not reported")
		}
	}
}

// TestParseEvents checks the decoding of a read from inotify: names joined
// to their watch's directory, an overflow as "", events of unknown watches
// and of the directory itself skipped.
func TestParseEvents(t *testing.T) {
	event := func(wd int32, mask uint32, name string) []byte {
		n := 0
		if name != "" {
			n = (len(name) + 1 + 15) / 16 * 16 // NUL-padded as the kernel does
		}
		b := make([]byte, syscall.SizeofInotifyEvent+n)
		binary.NativeEndian.PutUint32(b[0:], uint32(wd))
		binary.NativeEndian.PutUint32(b[4:], mask)
		binary.NativeEndian.PutUint32(b[12:], uint32(n))
		copy(b[syscall.SizeofInotifyEvent:], name)
		return b
	}
	wds := map[int32][]string{1: {"/etc/mandate"}, 2: {"/srv"}, 3: {"/conf", "/link"}}
	tests := []struct {
		name string
		buf  []byte
		want []string
		gone []int32
	}{
		{"one save", event(1, syscall.IN_CLOSE_WRITE, "policy.csv"), []string{"/etc/mandate/policy.csv"}, nil},
		{"two watches", slices.Concat(event(2, syscall.IN_MOVED_TO, "rates.csv"), event(1, syscall.IN_CREATE, "a-much-longer-file-name.csv")),
			[]string{"/srv/rates.csv", "/etc/mandate/a-much-longer-file-name.csv"}, nil},
		{"overflow", event(-1, syscall.IN_Q_OVERFLOW, ""), []string{""}, nil},
		{"unknown watch", event(9, syscall.IN_CLOSE_WRITE, "x"), nil, nil},
		// A watched directory moved or deleted: anything may have changed,
		// and its watch is gone (Run watches the name again once it exists).
		{"the directory itself", slices.Concat(event(1, syscall.IN_DELETE_SELF, ""), event(1, syscall.IN_IGNORED, "")), []string{"", ""}, []int32{1, 1}},
		{"the directory moved", event(2, syscall.IN_MOVE_SELF, ""), []string{""}, []int32{2}},
		{"one directory, two names", event(3, syscall.IN_CLOSE_WRITE, "policy.csv"), []string{"/conf/policy.csv", "/link/policy.csv"}, nil},
		{"truncated", event(1, syscall.IN_CLOSE_WRITE, "policy.csv")[:20], nil, nil},
	}
	for _, tc := range tests {
		got, gone := parseEvents(tc.buf, wds)
		if !slices.Equal(got, tc.want) || !slices.Equal(gone, tc.gone) {
			t.Fatalf("%s: got %q and gone %v, want %q and %v", tc.name, got, gone, tc.want, tc.gone)
		}
	}
}
