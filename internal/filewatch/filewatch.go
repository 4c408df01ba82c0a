// Package filewatch calls a function when files an operator edits change:
// the policy and the exchange rates, which running servers reload.
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Run watches paths until ctx is done and calls changed once after each
// burst of changes to any of them has been quiet for debounce (0 is
// 100 ms). If changed returns a positive duration, it is called again after
// that long even without a change (a reload that must be retried). It watches the directories holding the files, not the files,
// because editors (and atomic writers) save by renaming a new file over the
// old one, which ends a watch on the file itself; so a file need not exist
// yet, and creating it is a change. Run returns an error only if watching
// could not start; later watch errors are logged.
func Run(ctx context.Context, paths []string, debounce time.Duration, log *slog.Logger, changed func() (retry time.Duration)) error {
	targets := map[string]bool{}
	for _, p := range paths {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		targets[abs] = true
	}
	if len(targets) == 0 {
		return errors.New("filewatch: no files to watch")
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	dirs := map[string]bool{}
	for t := range targets {
		dir := filepath.Dir(t)
		if dirs[dir] {
			continue
		}
		if err := fw.Add(dir); err != nil {
			return fmt.Errorf("watch %s: %w", dir, err)
		}
		dirs[dir] = true
	}
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			abs, err := filepath.Abs(ev.Name)
			if err != nil || !targets[abs] || ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(debounce)
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			log.Warn("file watcher", "err", err)
		case <-timer.C:
			if retry := changed(); retry > 0 {
				timer.Reset(retry)
			}
		}
	}
}
