// Package filewatch calls a function when files an operator edits change:
// the policy and the exchange rates, which running servers reload.
package filewatch

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"time"
)

// Run watches paths until ctx is done and calls changed once after each
// burst of changes to any of them has been quiet for debounce (0 is
// 100 ms). If changed returns a positive duration, it is called again after
// that long even without a change (a reload that must be retried). It watches the directories holding the files, not the files,
// because editors (and atomic writers) save by renaming a new file over the
// old one, which ends a watch on the file itself; so a file need not exist
// yet, and creating it is a change. A file reached through a symlink that
// is swapped to point elsewhere (a Kubernetes ConfigMap volume renames a
// new "..data" link over the old one) has changed when it resolves to
// another file. Run returns an error only if watching could not start;
// later watch errors are logged.
func Run(ctx context.Context, paths []string, debounce time.Duration, log *slog.Logger, changed func() (retry time.Duration)) error {
	return run(ctx, paths, debounce, log, changed, false)
}

// RunChecked is Run, and also calls changed once, debounce after the watch
// is in place. A caller that read the files before calling it (as a server
// does at start, long before it starts watching) would otherwise miss a
// save made in between until the next one, and go on with the older copy.
func RunChecked(ctx context.Context, paths []string, debounce time.Duration, log *slog.Logger, changed func() (retry time.Duration)) error {
	return run(ctx, paths, debounce, log, changed, true)
}

func run(ctx context.Context, paths []string, debounce time.Duration, log *slog.Logger, changed func() (retry time.Duration), check bool) error {
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
	resolved := map[string]string{}
	for t := range targets {
		resolved[t], _ = filepath.EvalSymlinks(t)
	}
	var dirs []string
	seen := map[string]bool{}
	for t := range targets {
		if dir := filepath.Dir(t); !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	w, err := watchDirs(dirs)
	if err != nil {
		return err
	}
	defer w.close()
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timer := time.NewTimer(debounce)
	if !check {
		timer.Stop()
	}
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case name, ok := <-w.names:
			if !ok {
				return nil
			}
			if name != "" { // "" is "something may have changed" (events were lost)
				abs, err := filepath.Abs(name)
				if err != nil || !targets[abs] && !relinked(resolved) {
					continue
				}
			}
			timer.Reset(debounce)
		case err, ok := <-w.errs:
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

// dirWatcher reports the paths of files in the watched directories that
// may have changed: names gets each one (or "" when the kernel dropped
// events, so that anything may have changed), errs the errors after the
// start. Ownership changes and permission bits are not changes.
type dirWatcher struct {
	names <-chan string
	errs  <-chan error
	close func() error
}

// relinked re-resolves each target's symlinks and reports whether any now
// leads elsewhere (a ConfigMap's ..data swapped), updating resolved.
func relinked(resolved map[string]string) bool {
	changed := false
	for t, was := range resolved {
		if now, _ := filepath.EvalSymlinks(t); now != was {
			resolved[t] = now
			changed = true
		}
	}
	return changed
}
