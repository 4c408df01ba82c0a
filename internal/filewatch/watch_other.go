//go:build !linux

package filewatch

import (
	"fmt"
	"os"

	"github.com/fsnotify/fsnotify"
)

// watchDirs watches dirs with fsnotify (see watch_linux.go for Linux).
// fsnotify reports no close of a file elsewhere, and reports a file renamed
// into a directory as created, so every file created anew waits until it
// has been unchanged for a while before it is read (see Run).
func watchDirs(dirs []string) (*dirWatcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	for _, dir := range dirs {
		if err := fw.Add(dir); err != nil {
			fw.Close()
			return nil, fmt.Errorf("watch %s: %w", dir, err)
		}
	}
	events := make(chan event)
	done := make(chan struct{})
	go func() {
		defer close(events)
		for ev := range fw.Events {
			o := opChanged
			switch {
			case ev.Op == fsnotify.Chmod:
				continue
			case ev.Has(fsnotify.Create):
				o = opCreated
			case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
				o = opRemoved
			}
			select {
			case events <- event{ev.Name, o}:
			case <-done: // Run has stopped reading
				return
			}
		}
	}()
	return &dirWatcher{events: events, errs: fw.Errors, close: func() error {
		close(done)
		return fw.Close()
	}}, nil
}

// links returns how many names the file has: not known here, so a hard
// link made over a watched file waits like a file written anew.
func links(os.FileInfo) uint64 { return 1 }
