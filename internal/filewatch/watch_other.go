//go:build !linux

package filewatch

import (
	"fmt"

	"github.com/fsnotify/fsnotify"
)

// watchDirs watches dirs with fsnotify (see watch_linux.go for Linux).
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
	names := make(chan string)
	go func() {
		defer close(names)
		for ev := range fw.Events {
			if ev.Op != fsnotify.Chmod {
				names <- ev.Name
			}
		}
	}()
	return &dirWatcher{names: names, errs: fw.Errors, close: fw.Close}, nil
}
