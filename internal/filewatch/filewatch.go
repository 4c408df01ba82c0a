// Package filewatch calls a function when files an operator edits change:
// the policy and the exchange rates, which running servers reload.
package filewatch

import (
	"context"
	"errors"
	"log/slog"
	"os"
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
//
// A file created anew (`rm f; cat > f`, a copy to where there was no file,
// a slow copy over a network share) may still be being written when its
// burst of events ends, and what is on disk then is a prefix of it, which
// may well parse. So once a watched file is created, changed waits until
// its writer closes it (on Linux) or until it has been unchanged for two
// seconds (where no close is reported, or none comes, as for a hard link
// made and its other name removed). A file renamed into place is complete
// and does not wait (on Linux): writing a temporary file and renaming it
// over the watched one is the way to save that is never read half-written.
func Run(ctx context.Context, paths []string, debounce time.Duration, log *slog.Logger, changed func() (retry time.Duration)) error {
	return run(ctx, paths, debounce, settleFor, log, changed, false)
}

// settleFor is how long a watched file created anew must stay unchanged
// before it is read though its writer was not seen to close it.
const settleFor = 2 * time.Second

// RunChecked is Run, and also calls changed once, debounce after the watch
// is in place. A caller that read the files before calling it (as a server
// does at start, long before it starts watching) would otherwise miss a
// save made in between until the next one, and go on with the older copy.
func RunChecked(ctx context.Context, paths []string, debounce time.Duration, log *slog.Logger, changed func() (retry time.Duration)) error {
	return run(ctx, paths, debounce, settleFor, log, changed, true)
}

func run(ctx context.Context, paths []string, debounce, settle time.Duration, log *slog.Logger, changed func() (retry time.Duration), check bool) error {
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
	if settle <= 0 {
		settle = settleFor
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pending := &writers{settle: settle, files: map[string]*writing{}}
	timer := time.NewTimer(debounce)
	if !check {
		timer.Stop()
	}
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.events:
			if !ok {
				return nil
			}
			if ev.name != "" { // "" is "something may have changed" (events were lost)
				abs, err := filepath.Abs(ev.name)
				if err != nil || !targets[abs] && !relinked(resolved) {
					continue
				}
				if targets[abs] {
					pending.note(abs, ev.op, time.Now())
				}
			}
			timer.Reset(debounce)
		case err, ok := <-w.errs:
			if !ok {
				return nil
			}
			log.Warn("file watcher", "err", err)
		case <-timer.C:
			if wait := pending.wait(time.Now(), log); wait > 0 {
				timer.Reset(wait)
				continue
			}
			if retry := changed(); retry > 0 {
				timer.Reset(retry)
			}
		}
	}
}

// dirWatcher reports the paths of files in the watched directories that
// may have changed: events gets each one (with name "" when the kernel
// dropped events, so that anything may have changed), errs the errors
// after the start. Ownership changes and permission bits are not changes.
type dirWatcher struct {
	events <-chan event
	errs   <-chan error
	close  func() error
}

// event is a change to the file at name.
type event struct {
	name string
	op   op
}

// op is what happened to a file, as far as knowing whether it is complete.
type op uint8

const (
	opChanged op = iota // anything else: written to, or not known
	opCreated           // created: its writer may still be writing it
	opWritten           // closed after writing, or renamed into place: complete
	opRemoved           // removed or renamed away
)

// writers holds the watched files created anew whose writers have not
// been seen to close them, so that no reload reads them half-written.
type writers struct {
	settle time.Duration
	files  map[string]*writing
}

// writing is a file being written: the reload waits until it is closed,
// or until it has looked the same (size and modification time) for settle.
type writing struct {
	until  time.Time
	size   int64
	mod    time.Time
	logged bool
}

// note records what happened to the watched file at path.
func (ws *writers) note(path string, o op, now time.Time) {
	switch o {
	case opCreated:
		fi, err := os.Lstat(path)
		// A symlink, or a hard link to a file that has other names, is
		// complete: nobody wrote it through this name.
		if err != nil || !fi.Mode().IsRegular() || links(fi) > 1 {
			delete(ws.files, path)
			return
		}
		ws.files[path] = &writing{until: now.Add(ws.settle), size: fi.Size(), mod: fi.ModTime()}
	case opWritten, opRemoved:
		delete(ws.files, path)
	}
}

// wait returns how long the reload due at now must wait for files still
// being written; 0 is not at all. A file that has not changed for settle
// since it was created, or since the last look, is taken as it is.
func (ws *writers) wait(now time.Time, log *slog.Logger) time.Duration {
	var wait time.Duration
	for path, w := range ws.files {
		if now.Before(w.until) {
			if !w.logged {
				w.logged = true
				log.Info("file created; waiting for its writer to close it before reloading", "file", path, "at_most", ws.settle)
			}
			if d := w.until.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		fi, err := os.Lstat(path)
		if err == nil && (fi.Size() != w.size || !fi.ModTime().Equal(w.mod)) {
			w.until, w.size, w.mod = now.Add(ws.settle), fi.Size(), fi.ModTime()
			if wait == 0 || ws.settle < wait {
				wait = ws.settle
			}
			continue
		}
		delete(ws.files, path)
		if err == nil {
			log.Info("file created and not seen closed, but unchanged for a while: reloading it as it is", "file", path, "unchanged_for", ws.settle)
		}
	}
	return wait
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
