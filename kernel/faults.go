package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// How a plugin's faults are handled, beyond restarting a process that
// exits (slot.lost): a process whose calls keep timing out is restarted
// (hung_calls); an executable whose processes keep dying young is
// quarantined (quarantine_after); a swap to a version that answers clearly
// worse than the one it replaced is rolled back (rollback_window); a
// process that outgrows max_memory is replaced by a fresh one.

const (
	// rollbackMinCalls is how many calls a new version must have answered
	// in its window before its error rate is judged.
	rollbackMinCalls = 10
	// rollbackMinRate is the least error rate that rolls a version back;
	// it must also be clearly above the old version's (rollbackFactor
	// times it, plus rollbackMargin).
	rollbackMinRate = 0.2
	rollbackFactor  = 2
	rollbackMargin  = 0.05
)

// settle counts a call's outcome on the instance that had it: for the
// rollback window, and to notice a process whose calls all time out.
func (s *slot) settle(ctx context.Context, in *instance, bad bool, err error) {
	switch {
	case err == nil:
		in.hung.Store(0)
	case errors.Is(err, context.Canceled):
		return // the caller went away: no verdict on the plugin
	case errors.Is(err, context.DeadlineExceeded) && errors.Is(ctx.Err(), context.DeadlineExceeded):
		bad = true
		cfg, _ := s.config()
		if n := in.hung.Add(1); n == int64(cfg.HungCalls) {
			s.log.Error("plugin hung: calls in a row timed out; restarting it",
				"generation", in.gen, "pid", in.pid, "timed_out", n, "call_timeout", cfg.CallTimeout.D())
			s.lost(in, fmt.Errorf("%w: %d calls in a row timed out", errHung, n))
		}
	default:
		bad = true
	}
	if w := s.window.Load(); w != nil && w.hash == in.bin.hash {
		if !bad {
			w.ok.Add(1)
			return
		}
		w.bad.Add(1)
		// Judge at once on a failure, so a bad version is undone after a
		// handful of calls rather than at the watcher's next look.
		if worse, rate, n := w.clearlyWorse(); worse && w.fired.CompareAndSwap(false, true) {
			why := fmt.Sprintf("error rate %.0f%% over %d calls, against %.0f%% before the swap", 100*rate, n, 100*w.oldRate)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.rollback(w, why)
			}()
		}
	}
}

// errHung is why a hung process was stopped.
var errHung = errors.New("kernel: plugin hung")

// exitCause returns how in's process ended when it has, or is about to:
// its streams usually break a moment before its exit is reaped, and the
// exit says more. A process that does not exit soon (stopped, wedged)
// keeps cause.
func exitCause(in *instance, cause error) error {
	var ee *exec.ExitError
	if errors.As(cause, &ee) || errors.Is(cause, errHung) {
		return cause
	}
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-in.proc.Exited():
		return in.proc.ExitErr()
	case <-t.C:
		return cause
	}
}

// isCrash reports whether a process that ended for cause counts towards
// quarantining its executable: it exited by itself, with any status (nil
// is a clean exit nobody asked for) or a signal of its own making (a
// panic, a segfault). A SIGKILL from outside (an operator, the OOM
// killer), a kill for hanging and broken streams do not: they say nothing
// about the executable.
func isCrash(cause error) bool {
	if cause == nil {
		return true
	}
	var ee *exec.ExitError
	if !errors.As(cause, &ee) {
		return false
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return false
	}
	return true
}

// rollbackWindow counts the calls of a version just swapped in, against the
// error rate of the version it replaced.
type rollbackWindow struct {
	hash    string    // the new executable; its restarts count too
	gen     uint64    // its generation when swapped in
	prev    *binary   // the executable to go back to
	oldRate float64   // the old version's error rate over its life
	until   time.Time // when the window closes
	ok, bad atomic.Uint64
	fired   atomic.Bool // a rollback has been started
}

// rate returns the window's error rate and its number of calls.
func (w *rollbackWindow) rate() (float64, uint64) {
	ok, bad := w.ok.Load(), w.bad.Load()
	if ok+bad == 0 {
		return 0, 0
	}
	return float64(bad) / float64(ok+bad), ok + bad
}

// clearlyWorse reports whether the window's version should be rolled back.
func (w *rollbackWindow) clearlyWorse() (bool, float64, uint64) {
	r, n := w.rate()
	return n >= rollbackMinCalls && r >= rollbackMinRate && r > rollbackFactor*w.oldRate+rollbackMargin, r, n
}

// openWindow starts watching in, just swapped in for old, and rolls it back
// if it answers clearly worse within the slot's rollback_window. Called
// with s.mu held, from commit.
func (s *slot) openWindowLocked(in, old *instance) {
	cfg := s.cfg
	if !cfg.RollbackEnabled() || old == nil || old.bin.hash == in.bin.hash {
		s.window.Store(nil)
		return
	}
	oldRate := 0.0
	if ok, bad := old.ok.Load(), old.bad.Load(); ok+bad >= rollbackMinCalls {
		oldRate = float64(bad) / float64(ok+bad)
	}
	w := &rollbackWindow{hash: in.bin.hash, gen: in.gen, prev: old.bin, oldRate: oldRate, until: time.Now().Add(cfg.RollbackWindow.D())}
	s.window.Store(w)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchWindow(w)
	}()
}

// watchWindow judges w until it closes, the slot moves to another
// executable, or the slot stops.
func (s *slot) watchWindow(w *rollbackWindow) {
	tick := time.NewTicker(max(time.Until(w.until)/50, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		if s.window.Load() != w {
			return
		}
		if worse, rate, n := w.clearlyWorse(); worse && w.fired.CompareAndSwap(false, true) {
			s.rollback(w, fmt.Sprintf("error rate %.0f%% over %d calls, against %.0f%% before the swap", 100*rate, n, 100*w.oldRate))
			return
		}
		if time.Now().After(w.until) {
			s.window.CompareAndSwap(w, nil)
			rate, n := w.rate()
			s.log.Info("rollback window closed; keeping the new version", "generation", w.gen, "calls", n, "error_rate", rate)
			return
		}
	}
}

// rollback swaps back to the executable w's version replaced, and keeps
// the bad one from coming back until its file changes. It runs in the
// background, from the window's watcher or from a quarantine.
func (s *slot) rollback(w *rollbackWindow, why string) {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	s.mu.Lock()
	if s.stopping || s.window.Load() != w {
		s.mu.Unlock()
		return // a later swap or a stop got there first
	}
	s.window.Store(nil)
	cfg, listeners, cur, gen := s.cfg, s.listeners, s.current, s.generation+1
	s.mu.Unlock()
	s.log.Error("rolling back a bad swap", "bad_sha256", w.hash[:12], "to_sha256", w.prev.hash[:12], "why", why)
	in, err := s.prepare(s.ctx, cfg, listeners, w.prev, gen)
	if err != nil {
		s.mu.Lock()
		s.lastError = fmt.Sprintf("rollback to sha256 %s failed: %v (after %s)", w.prev.hash[:12], err, why)
		s.mu.Unlock()
		s.log.Error("rollback failed; the new version keeps serving", "error", err)
		return
	}
	s.commit(in, commitRollback)
	s.rollbacks.Add(1)
	from := "no running process"
	if cur != nil {
		from = fmt.Sprintf("generation %d (%s)", cur.gen, cur.version)
	}
	s.mu.Lock()
	s.failedHash = w.hash
	s.lastError = fmt.Sprintf("rolled back from %s, sha256 %s, to generation %d (%s): %s; the file is not tried again until it changes",
		from, w.hash[:12], in.gen, in.version, why)
	s.mu.Unlock()
}

// crashedLocked records that a process of b died young (or failed to
// start), and reports whether b is now quarantined. Called with s.mu held.
func (s *slot) crashedLocked(hash string, young bool) bool {
	switch {
	case !young:
		s.crashes = 0
		return false
	case s.crashHash == hash:
		s.crashes++
	default:
		s.crashHash, s.crashes = hash, 1
	}
	return s.crashes >= s.cfg.QuarantineAfter
}

// quarantineLocked stops restarting the executable hash: the slot fails
// calls at once until its file changes or `ctl reload` forces a start. When
// a swap brought it in, the slot rolls back instead. It reports whether a
// rollback was started. Called with s.mu held, with no current instance.
func (s *slot) quarantineLocked(hash, why string) bool {
	if w := s.window.Load(); w != nil && w.hash == hash {
		s.state = stateStarting // calls wait for the rollback
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.rollback(w, why)
		}()
		return true
	}
	s.quarantined = hash
	s.failedHash = hash
	s.state = stateFailed
	s.nextRestart = time.Time{}
	s.lastError = fmt.Sprintf("quarantined sha256 %s: %s; not restarted until the file changes or `ctl reload %s`", hash[:12], why, s.name)
	s.log.Error("plugin quarantined", "sha256", hash[:12], "why", why)
	return false
}

// memoryCheck is how often the kernel reads its plugins' resident memory.
const memoryCheck = time.Second

// watchMemory replaces, gracefully, every plugin process whose resident
// memory has grown past its slot's max_memory, until ctx ends.
func (k *Kernel) watchMemory(ctx context.Context) {
	t := time.NewTicker(memoryCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		slots := make([]*slot, 0, len(k.slots))
		for _, s := range k.slots {
			slots = append(slots, s)
		}
		k.mu.Unlock()
		for _, s := range slots {
			s.checkMemory()
		}
	}
}

// checkMemory recycles the current instance if it is over max_memory.
func (s *slot) checkMemory() {
	s.mu.Lock()
	cur, limit := s.current, s.cfg.MaxMemory
	s.mu.Unlock()
	if cur == nil {
		return
	}
	rss, err := residentBytes(cur.pid)
	if err != nil || rss <= limit {
		return
	}
	s.recycle(cur, fmt.Sprintf("resident memory %d MiB passed max_memory (%d MiB)", rss>>20, limit>>20))
}

// recycle replaces in by a fresh process of the same executable: the new
// one serves before the old one drains, so no call fails.
func (s *slot) recycle(in *instance, why string) {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	s.mu.Lock()
	if s.current != in || s.stopping {
		s.mu.Unlock()
		return
	}
	cfg, listeners, gen := s.cfg, s.listeners, s.generation+1
	s.mu.Unlock()
	s.log.Warn("replacing a plugin process", "generation", in.gen, "pid", in.pid, "why", why)
	next, err := s.prepare(s.ctx, cfg, listeners, in.bin, gen)
	if err != nil {
		s.mu.Lock()
		s.lastError = fmt.Sprintf("replacing generation %d (%s) failed: %v", in.gen, why, err)
		s.mu.Unlock()
		return
	}
	s.commit(next, commitRecycle)
	s.restarts.Add(1)
	s.mu.Lock()
	s.lastError = fmt.Sprintf("generation %d (pid %d) replaced by %d: %s", in.gen, in.pid, next.gen, why)
	s.mu.Unlock()
}

// residentBytes reads a process's resident set size.
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/statm: %q", pid, b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}
