package filewatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// watchMask is what a directory watch asks the kernel for on Linux: a file
// saved (written and closed), renamed in or out, created or removed. Not
// IN_MODIFY, which fires on every write(2) to any file in the directory:
// the policy usually sits beside mandate.db, whose WAL takes tens of writes
// per tool call, and with IN_MODIFY every `mandate serve` process was woken
// for each write of every process (fsnotify asks for it and cannot be told
// not to). With four processes on one database the wake-ups took a third
// of the machine and halved the refunds per second (bench/e2e). A save
// still ends in IN_CLOSE_WRITE (an editor writing in place, `cp`, `>`) or
// IN_MOVED_TO (a rename over the file); a program that keeps the file open
// and writes to it is seen when it closes it. IN_CREATE of a file is not
// the end of a save: Run waits for the file's IN_CLOSE_WRITE before
// reading it (see Run). IN_MOVE_SELF and
// IN_DELETE_SELF say the watched directory itself was renamed or removed
// (a deploy that swaps the whole directory): its name is watched again
// once it exists, and that counts as a change.
const watchMask = syscall.IN_CLOSE_WRITE | syscall.IN_MOVED_TO | syscall.IN_MOVED_FROM |
	syscall.IN_CREATE | syscall.IN_DELETE | syscall.IN_MOVE_SELF | syscall.IN_DELETE_SELF

// watchDirs watches dirs with inotify, asking only for watchMask.
func watchDirs(dirs []string) (*dirWatcher, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	// Non-blocking, so reads wait in Go's poller and Close ends them.
	f := os.NewFile(uintptr(fd), "inotify")
	wds := map[int32][]string{}
	for _, dir := range dirs {
		wd, err := syscall.InotifyAddWatch(fd, dir, watchMask)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("watch %s: %w", dir, err)
		}
		wds[int32(wd)] = append(wds[int32(wd)], dir) // one inode, several names: the same wd
	}
	events := make(chan event)
	errs := make(chan error)
	done := make(chan struct{})
	go func() {
		defer close(events)
		defer close(errs)
		buf := make([]byte, 64*(syscall.SizeofInotifyEvent+syscall.NAME_MAX+1))
		var lost []string // watched directories renamed or deleted: watched again once they exist
		for {
			if len(lost) > 0 {
				f.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			} else {
				f.SetReadDeadline(time.Time{})
			}
			n, err := f.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				again := lost[:0]
				found := false
				for _, dir := range lost {
					wd, err := syscall.InotifyAddWatch(fd, dir, watchMask)
					if err != nil {
						again = append(again, dir)
						continue
					}
					wds[int32(wd)] = append(wds[int32(wd)], dir)
					found = true
				}
				lost = again
				if found {
					select {
					case events <- event{}: // a new directory: anything may have changed
					case <-done:
						return
					}
				}
				continue
			}
			if err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				select { // a read that fails for another reason would fail again
				case errs <- err:
				case <-done:
				}
				return
			}
			evs, gone := parseEvents(buf[:n], wds)
			for _, wd := range gone {
				if dirs, ok := wds[wd]; ok {
					syscall.InotifyRmWatch(fd, uint32(wd)) // a moved directory still sends events; its name is no longer ours
					delete(wds, wd)
					lost = append(lost, dirs...)
				}
			}
			for _, ev := range evs {
				select {
				case events <- ev:
				case <-done:
					return
				}
			}
		}
	}()
	return &dirWatcher{events: events, errs: errs, close: func() error {
		close(done)
		return f.Close()
	}}, nil
}

// parseEvents returns each event in buf, a read from an inotify descriptor
// whose watch descriptors wds maps to directories, with the file's path;
// "" for an overflow of the kernel's queue (events were lost).
func parseEvents(buf []byte, wds map[int32][]string) (out []event, gone []int32) {
	for len(buf) >= syscall.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(buf[0:]))
		mask := binary.NativeEndian.Uint32(buf[4:])
		size := syscall.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[12:]))
		if size > len(buf) {
			break
		}
		name := strings.TrimRight(string(buf[syscall.SizeofInotifyEvent:size]), "\x00")
		buf = buf[size:]
		switch dirs := wds[wd]; {
		case mask&syscall.IN_Q_OVERFLOW != 0:
			out = append(out, event{})
		case mask&(syscall.IN_MOVE_SELF|syscall.IN_DELETE_SELF|syscall.IN_IGNORED) != 0:
			out = append(out, event{})
			gone = append(gone, wd)
		case name != "":
			o := opChanged
			switch {
			case mask&syscall.IN_ISDIR != 0:
			case mask&syscall.IN_CREATE != 0:
				o = opCreated
			case mask&(syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO) != 0:
				o = opWritten
			case mask&(syscall.IN_DELETE|syscall.IN_MOVED_FROM) != 0:
				o = opRemoved
			}
			for _, dir := range dirs {
				out = append(out, event{filepath.Join(dir, name), o})
			}
		}
	}
	return out, gone
}

// links returns how many names the file has.
func links(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Nlink
	}
	return 1
}
