package kernel

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Timing of the file watcher.
const (
	// debounce is how long a name must be quiet before the watcher looks
	// at it; debounceCap bounds the wait for a file that keeps changing.
	debounce    = 200 * time.Millisecond
	debounceCap = 2 * time.Second
	// settle is the gap between the two looks that must agree on size,
	// mtime and inode.
	settle = 50 * time.Millisecond
	// quickDebounce and quickSettle replace them for a name whose first
	// event is a bare Create: what an atomic rename onto the name looks
	// like (IN_MOVED_TO), the way a deploy should replace an executable.
	// The file arrived whole, so waiting buys nothing. A file created and
	// then written gets Write events, and any later event re-arms the
	// name with the full debounce; a file caught half-written anyway
	// fails the executable check and is tried again on its next event.
	quickDebounce = 10 * time.Millisecond
	quickSettle   = 15 * time.Millisecond
	// defaultRescan is the period of the full rescan that catches what
	// events missed (an overflowed queue, a directory that came back).
	defaultRescan = 10 * time.Second
)

// watcher watches the directories of plugin executables with fsnotify and
// tells a slot when its executable changed. It watches directories, never
// files (a file watch is lost when the file is renamed over), filters events
// by name, debounces each name, and reports a file only once it is stable;
// whether its content differs from the running one is the slot's question.
type watcher struct {
	log    *slog.Logger
	fsw    *fsnotify.Watcher
	rescan time.Duration // the period of full rescans

	mu      sync.Mutex
	targets map[string][]*slot // executable path → slots running it; guarded by mu
	dirs    map[string]bool    // directories with a watch; guarded by mu
	seen    map[string]fileID  // last stable identity reported per path; guarded by mu
	pending map[string]*pendingFile

	wg sync.WaitGroup // settle checks
}

type pendingFile struct {
	first time.Time
	timer *time.Timer
	seq   int  // counts arms; a settle check that sees it move leaves the entry to the newer timer
	quick bool // armed by a lone Create: quickDebounce and quickSettle apply
}

func newWatcher(log *slog.Logger) (*watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &watcher{
		log:     log.With("component", "watcher"),
		fsw:     fsw,
		rescan:  defaultRescan,
		targets: make(map[string][]*slot),
		dirs:    make(map[string]bool),
		seen:    make(map[string]fileID),
		pending: make(map[string]*pendingFile),
	}, nil
}

// set replaces the watched executables: each slot whose config has watch
// enabled watches its path.
func (w *watcher) set(slots []*slot) {
	targets := make(map[string][]*slot)
	for _, s := range slots {
		cfg, _ := s.config()
		if cfg.WatchEnabled() {
			targets[cfg.Path] = append(targets[cfg.Path], s)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.targets = targets
	want := make(map[string]bool)
	for p, ss := range targets {
		want[filepath.Dir(p)] = true
		// What runs is what has been seen: a file that differs from the
		// running executable's (replaced while it started) is reported by
		// the next rescan. With nothing known yet, the rescan reports the
		// file and the slot's hash comparison decides.
		if _, ok := w.seen[p]; !ok {
			for _, s := range ss {
				if id, ok := s.runningID(p); ok {
					w.seen[p] = id
					break
				}
			}
		}
	}
	for d := range w.dirs {
		if !want[d] {
			_ = w.fsw.Remove(d)
			delete(w.dirs, d)
		}
	}
	for d := range want {
		w.addDirLocked(d)
	}
	for p := range w.seen {
		if _, ok := targets[p]; !ok {
			delete(w.seen, p)
		}
	}
}

func (w *watcher) addDirLocked(d string) {
	if w.dirs[d] {
		return
	}
	if err := w.fsw.Add(d); err != nil {
		// The directory may not exist yet; the rescan tries again.
		w.log.Debug("cannot watch directory yet", "dir", d, "error", err)
		return
	}
	w.dirs[d] = true
}

// run handles events until ctx is done, then closes the watcher and waits
// for its goroutines.
func (w *watcher) run(ctx context.Context) {
	defer func() {
		w.mu.Lock()
		for _, p := range w.pending {
			p.timer.Stop()
		}
		w.pending = map[string]*pendingFile{}
		w.mu.Unlock()
		_ = w.fsw.Close()
		w.wg.Wait()
	}()
	tick := time.NewTicker(w.rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			w.event(ctx, ev)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn("file events overflowed; rescanning")
			} else {
				w.log.Warn("file watch error; rescanning", "error", err)
			}
			w.rescanAll(ctx)
		case <-tick.C:
			w.rescanAll(ctx)
		}
	}
}

func (w *watcher) event(ctx context.Context, ev fsnotify.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirs[ev.Name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		// The directory itself went away; the rescan watches it again
		// when it is back.
		delete(w.dirs, ev.Name)
		return
	}
	if _, ok := w.targets[ev.Name]; ok {
		if _, busy := w.pending[ev.Name]; !busy && ev.Op == fsnotify.Create {
			w.armLocked(ctx, ev.Name, true)
			return
		}
		w.debounceLocked(ctx, ev.Name)
	}
}

// debounceLocked (re)arms the quiet-period timer of path.
func (w *watcher) debounceLocked(ctx context.Context, path string) {
	w.armLocked(ctx, path, false)
}

// armLocked (re)arms the quiet-period timer of path, quick for a name that
// arrived whole (see quickDebounce).
func (w *watcher) armLocked(ctx context.Context, path string, quick bool) {
	now := time.Now()
	p, ok := w.pending[path]
	if !ok {
		p = &pendingFile{first: now}
		w.pending[path] = p
	} else {
		p.timer.Stop()
	}
	p.seq++
	p.quick = quick
	wait := debounce
	if quick {
		wait = quickDebounce
	}
	if left := debounceCap - now.Sub(p.first); left < wait {
		wait = max(left, 0)
	}
	p.timer = time.AfterFunc(wait, func() { w.settleCheck(ctx, path) })
}

// settleCheck looks at path twice, settle apart; a file that is still
// changing is debounced again, a stable one is reported.
func (w *watcher) settleCheck(ctx context.Context, path string) {
	w.mu.Lock()
	p, ok := w.pending[path]
	if !ok || ctx.Err() != nil {
		w.mu.Unlock()
		return
	}
	seq, quick := p.seq, p.quick
	gap := settle
	if quick {
		gap = quickSettle
	}
	w.wg.Add(1)
	w.mu.Unlock()
	defer w.wg.Done()

	a, _, errA := statID(path)
	t := time.NewTimer(gap)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return
	}
	b, fi, errB := statID(path)

	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.pending[path]; !ok || cur.seq != seq {
		// An event re-armed the debounce meanwhile: that timer's check
		// will look again.
		return
	}
	if errA != nil || errB != nil || a != b {
		if errB != nil && errors.Is(errB, os.ErrNotExist) {
			// Removed (or mid-rename): wait for it to come back.
			delete(w.pending, path)
			return
		}
		w.debounceLocked(ctx, path)
		return
	}
	if quick && !completeExecutable(path) {
		// Not the whole file a rename brings: a writer is still at it.
		w.debounceLocked(ctx, path)
		return
	}
	delete(w.pending, path)
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		// chmod +x comes last for install(1); its event brings us back.
		return
	}
	if w.seen[path] == b {
		return
	}
	w.seen[path] = b
	w.log.Debug("executable changed", "path", path, "size", b.size)
	for _, s := range w.targets[path] {
		s.fileChanged()
	}
}

// rescanAll re-adds missing directory watches and reports executables whose
// identity changed without an event reaching us.
func (w *watcher) rescanAll(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range w.targets {
		w.addDirLocked(filepath.Dir(p))
		id, _, err := statID(p)
		if err != nil {
			continue
		}
		if old, ok := w.seen[p]; !ok || old != id {
			if _, busy := w.pending[p]; !busy {
				w.debounceLocked(ctx, p)
			}
		}
	}
}

// moving reports whether path has changed since the watcher last reported
// it, or has events waiting: whatever the kernel found there is on its way
// to being replaced, and the watcher reports the file again once it settles.
func (w *watcher) moving(path string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, busy := w.pending[path]; busy {
		return true
	}
	id, _, err := statID(path)
	return err == nil && id != w.seen[path]
}

// completeExecutable reports whether path holds a complete executable now.
func completeExecutable(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return checkExecutable(path, f) == nil
}
