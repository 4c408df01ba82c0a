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
		case ev := <-w.events:
			if ev.name != policy {
				t.Fatalf("the watcher reported %q before the save of %s", ev.name, policy)
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
// and of the directory itself skipped, and what happened to the file: a
// file created may still be being written, one closed after writing or
// renamed into place is complete.
func TestParseEvents(t *testing.T) {
	raw := func(wd int32, mask uint32, name string) []byte {
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
		want []event
		gone []int32
	}{
		{"one save", raw(1, syscall.IN_CLOSE_WRITE, "policy.csv"), []event{{"/etc/mandate/policy.csv", opWritten}}, nil},
		{"two watches", slices.Concat(raw(2, syscall.IN_MOVED_TO, "rates.csv"), raw(1, syscall.IN_CREATE, "a-much-longer-file-name.csv")),
			[]event{{"/srv/rates.csv", opWritten}, {"/etc/mandate/a-much-longer-file-name.csv", opCreated}}, nil},
		{"created, written, closed", slices.Concat(raw(1, syscall.IN_CREATE, "policy.csv"), raw(1, syscall.IN_CLOSE_WRITE, "policy.csv")),
			[]event{{"/etc/mandate/policy.csv", opCreated}, {"/etc/mandate/policy.csv", opWritten}}, nil},
		{"removed, renamed away", slices.Concat(raw(1, syscall.IN_DELETE, "policy.csv"), raw(1, syscall.IN_MOVED_FROM, "model.conf")),
			[]event{{"/etc/mandate/policy.csv", opRemoved}, {"/etc/mandate/model.conf", opRemoved}}, nil},
		{"a directory created", raw(1, syscall.IN_CREATE|syscall.IN_ISDIR, "policy.csv"), []event{{"/etc/mandate/policy.csv", opChanged}}, nil},
		{"overflow", raw(-1, syscall.IN_Q_OVERFLOW, ""), []event{{}}, nil},
		{"unknown watch", raw(9, syscall.IN_CLOSE_WRITE, "x"), nil, nil},
		// A watched directory moved or deleted: anything may have changed,
		// and its watch is gone (Run watches the name again once it exists).
		{"the directory itself", slices.Concat(raw(1, syscall.IN_DELETE_SELF, ""), raw(1, syscall.IN_IGNORED, "")), []event{{}, {}}, []int32{1, 1}},
		{"the directory moved", raw(2, syscall.IN_MOVE_SELF, ""), []event{{}}, []int32{2}},
		{"one directory, two names", raw(3, syscall.IN_CLOSE_WRITE, "policy.csv"), []event{{"/conf/policy.csv", opWritten}, {"/link/policy.csv", opWritten}}, nil},
		{"truncated", raw(1, syscall.IN_CLOSE_WRITE, "policy.csv")[:20], nil, nil},
	}
	for _, tc := range tests {
		got, gone := parseEvents(tc.buf, wds)
		if !slices.Equal(got, tc.want) || !slices.Equal(gone, tc.gone) {
			t.Fatalf("%s: got %q and gone %v, want %q and %v", tc.name, got, gone, tc.want, tc.gone)
		}
	}
}
