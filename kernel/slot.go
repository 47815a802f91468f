package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/loglimit"
	"github.com/switchyard-dev/switchyard/kernel/config"
	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Slot states as `ctl plugins` reports them.
const (
	stateStarting = "starting" // no instance serves yet: first start, or a restart after a crash
	stateServing  = "serving"
	stateDraining = "draining" // the slot is being stopped; its last instance finishes its calls
	stateFailed   = "failed"   // no instance serves and the last start failed; a restart is scheduled
	stateStopped  = "stopped"
)

// Errors of the slot state machine.
var (
	// ErrUnchanged: a file change left the executable's content as it is.
	ErrUnchanged = errors.New("kernel: executable unchanged")
	// ErrStopped: the slot has been stopped.
	ErrStopped = errors.New("kernel: plugin stopped")
	// ErrNoInstance: no instance became available in time for a call.
	ErrNoInstance = errors.New("kernel: no plugin instance available")
	// ErrPinned: the executable's content is not what the configuration's
	// sha256 pins.
	ErrPinned = errors.New("kernel: executable does not match its sha256 pin")
)

const (
	// restartWait bounds how long a new call waits for a restarting plugin
	// before it fails.
	restartWait = 5 * time.Second
	// backoff of restarts after a crash.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	// stableAfter: an instance that lived this long resets the backoff.
	stableAfter = 10 * time.Second
	// keepSnapshots is how many recent executables a slot keeps for
	// rollback.
	keepSnapshots = 3
)

// slot is one [plugins.NAME] entry: at most one current instance that new
// calls go to, and any number of draining ones finishing their calls. Swaps,
// restarts and stopping are serialised by swapMu; the fields calls read are
// guarded by mu, and the hot path (acquire) takes mu only briefly.
type slot struct {
	k    *Kernel
	name string
	log  *slog.Logger
	// callLog is log for the failure of one call (a request, a query, a
	// line event): rate-limited, since a plugin that is down under load
	// fails tens of thousands of calls a second.
	callLog *slog.Logger

	ctx    context.Context // cancelled when the slot stops
	cancel context.CancelFunc
	wg     sync.WaitGroup // drains, exit watchers, restarts, the kick loop
	kick   chan struct{}  // the watcher's "file changed", coalesced

	swapMu sync.Mutex // serialises swap, restart and stop

	mu         sync.Mutex
	cfg        *config.Plugin    // guarded by mu
	listeners  []*proto.Listener // routing here; guarded by mu
	current    *instance         // guarded by mu
	draining   []*instance       // guarded by mu
	generation uint64            // of the newest instance started; guarded by mu
	state      string            // guarded by mu
	changed    chan struct{}     // closed and replaced when current changes; guarded by mu
	lastSwap   time.Time         // guarded by mu
	lastError  string            // guarded by mu
	failReply  string            // the line failure reply of the newest instance; guarded by mu
	failedHash string            // the executable whose start failed last; guarded by mu
	history    []string          // recent hashes, newest last; guarded by mu
	backoff    time.Duration     // next restart delay; guarded by mu
	stopping   bool              // guarded by mu

	nextRestart time.Time // when a restart is due, zero when none is; guarded by mu
	crashHash   string    // the executable whose processes died young last; guarded by mu
	crashes     int       // how many in a row; guarded by mu
	quarantined string    // the executable not restarted until it changes; guarded by mu

	// window watches the version a swap brought in, for rollback; nil
	// outside a rollback window.
	window atomic.Pointer[rollbackWindow]

	served    atomic.Uint64
	errs      atomic.Uint64
	restarts  atomic.Uint64
	rollbacks atomic.Uint64
	swaps     atomic.Uint64 // commits of a swap
	swapFails atomic.Uint64 // swaps that failed while a version ran

	latency callLatency // of calls, by kind (metrics.go)
}

// callLogRate and callLogBurst bound the records of failed calls a slot
// logs; the rest are counted (and every call is counted in ctl plugins and
// the metrics whatever the log says).
const (
	callLogRate  = 100
	callLogBurst = 1000
)

func newSlot(k *Kernel, cfg *config.Plugin) *slot {
	ctx, cancel := context.WithCancel(context.Background())
	log := k.log.With("plugin", cfg.Name)
	return &slot{
		k:       k,
		name:    cfg.Name,
		log:     log,
		callLog: loglimit.Logger(log, loglimit.New(callLogRate, callLogBurst), "call failures over the log's rate limit: records dropped"),
		ctx:     ctx,
		cancel:  cancel,
		kick:    make(chan struct{}, 1),
		cfg:     cfg,
		state:   stateStarting,
		changed: make(chan struct{}),
	}
}

// instance is one running process of a slot.
type instance struct {
	proc    *host.Process
	gen     uint64
	bin     *binary
	version string
	// protocols the process serves, as Describe said.
	protocols []string
	// failReply is the line a line client gets when an event fails.
	failReply string
	pid       int
	started   time.Time
	// token names the process kernel-wide to the line sessions it meets
	// (generations repeat across slots).
	token uint64

	// calls counts calls in flight; retiredBit marks an instance that takes
	// no new calls. Lock-free, since every call passes here.
	calls   atomic.Int64
	hung    atomic.Int64  // calls in a row that timed out
	ok, bad atomic.Uint64 // calls answered well, and failed or answered with a server error
	idle    chan struct{} // closed once retired with no call in flight
	idleOne sync.Once
	lostOne sync.Once // the slot handles an instance's loss once
}

const retiredBit = int64(1) << 62

func (in *instance) tryAcquire() bool {
	for {
		v := in.calls.Load()
		if v&retiredBit != 0 {
			return false
		}
		if in.calls.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (in *instance) release() {
	if in.calls.Add(-1) == retiredBit {
		in.idleOne.Do(func() { close(in.idle) })
	}
}

// retire stops new calls; idle closes once the calls in flight are done.
func (in *instance) retire() {
	if in.calls.Or(retiredBit)&^retiredBit == 0 {
		in.idleOne.Do(func() { close(in.idle) })
	}
}

func (in *instance) inflight() int64 { return in.calls.Load() &^ retiredBit }

// setConfig updates the slot's configuration and the listeners routing to
// it. A change that needs a new process is the caller's to act on.
func (s *slot) setConfig(cfg *config.Plugin, listeners []*proto.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	s.listeners = listeners
}

func (s *slot) config() (*config.Plugin, []*proto.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg, s.listeners
}

// setCurrentLocked makes in the instance new calls go to, and wakes the
// calls waiting for one.
func (s *slot) setCurrentLocked(in *instance) {
	s.current = in
	close(s.changed)
	s.changed = make(chan struct{})
}

// acquire returns the current instance with a call counted on it. While the
// slot has none (a restart is under way) it waits up to restartWait, bounded
// by ctx and by gone (the client went away; nil for none).
func (s *slot) acquire(ctx context.Context, gone <-chan struct{}) (*instance, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var expired <-chan time.Time
	for {
		s.mu.Lock()
		in, changed, state := s.current, s.changed, s.state
		s.mu.Unlock()
		if in != nil && in.tryAcquire() {
			return in, nil
		}
		switch state {
		case stateStopped, stateDraining:
			return nil, ErrStopped
		case stateFailed:
			s.mu.Lock()
			why := s.lastError
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrNoInstance, why)
		}
		if timer == nil {
			timer = time.NewTimer(restartWait)
			expired = timer.C
		}
		select {
		case <-changed:
		case <-expired:
			return nil, fmt.Errorf("%w within %v (%s)", ErrNoInstance, restartWait, state)
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-gone:
			return nil, context.Canceled
		}
	}
}

// prepare starts a new instance from b as generation gen: exec, handshake,
// Describe (it must serve every protocol the slot's listeners need),
// Configure, and the Calls streams. It does not switch traffic to it.
func (s *slot) prepare(ctx context.Context, cfg *config.Plugin, listeners []*proto.Listener, b *binary, gen uint64) (*instance, error) {
	if cfg.SHA256 != "" && b.hash != cfg.SHA256 {
		return nil, fmt.Errorf("%w: %s has sha256 %s, the configuration pins %s", ErrPinned, b.source, b.hash, cfg.SHA256)
	}
	settings, err := json.Marshal(cfg.Settings)
	if err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	log := s.log.With("generation", gen)
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	// The Go runtime's debugging knobs follow the kernel into its plugins,
	// so a race-enabled or traceback-tuned deployment covers them too.
	for _, name := range []string{"GORACE", "GOTRACEBACK"} {
		if v := s.k.getenv(name); v != "" {
			env = append(env, name+"="+v)
		}
	}
	for _, k := range sortedKeys(cfg.Env) {
		env = append(env, k+"="+cfg.Env[k])
	}
	started := time.Now()
	ph := newPidHandler(log.Handler())
	proc, err := host.Start(ctx, host.Spec{
		Path:         b.path,
		SHA256:       b.hash,
		Args:         cfg.Args,
		Dir:          s.k.baseDir,
		Env:          env,
		SocketDir:    s.k.socketDir,
		StartTimeout: cfg.StartTimeout.D(),
		Logger:       slog.New(ph),
		Store:        slotStore{slot: s.name, st: s.k.store},
		Conns:        slotConns{k: s.k, slot: s},
	})
	if err != nil {
		return nil, err
	}
	in := &instance{proc: proc, gen: gen, bin: b, pid: proc.Pid(), started: started, idle: make(chan struct{}), token: s.k.tokens.Add(1)}
	ph.pid.Store(int64(in.pid))
	fail := func(err error) (*instance, error) {
		proc.Kill()
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, cfg.CallTimeout.D())
	defer cancel()
	d, err := proc.Describe(callCtx)
	if err != nil {
		return fail(err)
	}
	in.version = d.GetVersion()
	in.protocols = d.GetProtocols()
	in.failReply = d.GetLineFailReply()
	for _, l := range listeners {
		if !serves(d.GetProtocols(), l.GetProtocol()) {
			return fail(fmt.Errorf("%s %s does not serve %s, which listener %q needs (it serves %v)",
				d.GetName(), d.GetVersion(), l.GetProtocol(), l.GetName(), d.GetProtocols()))
		}
	}
	err = proc.Configure(callCtx, &proto.ConfigureRequest{
		Slot:         s.name,
		Generation:   gen,
		SettingsJson: settings,
		Listeners:    listeners,
		LogLevel:     int32(s.k.level.Level()),
	})
	if err != nil {
		return fail(err)
	}
	if err := proc.Open(0); err != nil {
		return fail(err)
	}
	log.Info("plugin started", "version", in.version, "pid", in.pid, "sha256", b.hash[:12], "took", time.Since(started).Round(time.Millisecond))
	return in, nil
}

// serves reports whether a plugin serving protocols can answer a listener of
// protocol p: SCGI requests reach the plugin as HTTP.
func serves(protocols []string, p string) bool {
	if p == "scgi" {
		p = "http"
	}
	return slices.Contains(protocols, p)
}

// commitKind says why an instance becomes current.
type commitKind int

const (
	commitStart    commitKind = iota // the slot's first instance, or one after a quarantine
	commitSwap                       // a new executable, or a forced reload, replaces a running one
	commitRestart                    // the same executable after its process died
	commitRecycle                    // the same executable, replacing a process that grew too big
	commitRollback                   // the executable a bad swap replaced
)

// commit switches new calls to in and drains the instance it replaces.
func (s *slot) commit(in *instance, how commitKind) {
	s.mu.Lock()
	old := s.current
	s.setCurrentLocked(in)
	s.generation = in.gen
	s.state = stateServing
	s.nextRestart = time.Time{}
	s.quarantined = ""
	switch how {
	case commitSwap, commitRollback:
		s.lastSwap = time.Now()
	}
	switch how {
	case commitStart, commitSwap, commitRollback:
		// A decision about which executable runs: the record of the
		// one before does not carry over.
		s.crashHash, s.crashes = "", 0
	}
	if how == commitSwap {
		s.swaps.Add(1)
		s.openWindowLocked(in, old)
	} else if how != commitRestart && how != commitRecycle {
		s.window.Store(nil)
	}
	if how != commitRestart {
		// A restart keeps the record of why it happened.
		s.lastError = ""
	}
	s.failedHash = ""
	s.failReply = in.failReply
	s.history = append(slices.DeleteFunc(s.history, func(h string) bool { return h == in.bin.hash }), in.bin.hash)
	if len(s.history) > keepSnapshots {
		s.history = s.history[len(s.history)-keepSnapshots:]
	}
	if old != nil {
		s.draining = append(s.draining, old)
	}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchExit(in)
	}()
	if old != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.drain(old)
		}()
	}
	s.k.gcSnapshots()
}

// drain retires in, waits for its calls (up to drain_timeout), ends its
// streams and stops the process.
func (s *slot) drain(in *instance) {
	cfg, _ := s.config()
	in.retire()
	t := time.NewTimer(cfg.DrainTimeout.D())
	defer t.Stop()
	select {
	case <-in.idle:
	case <-in.proc.Exited():
	case <-t.C:
		s.log.Warn("drain timeout: stopping a plugin with calls in flight",
			"generation", in.gen, "pid", in.pid, "inflight", in.inflight(), "drain_timeout", cfg.DrainTimeout.D())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = in.proc.Drain(ctx)
	cancel()
	in.proc.Kill()
	s.mu.Lock()
	s.draining = slices.DeleteFunc(s.draining, func(d *instance) bool { return d == in })
	s.mu.Unlock()
	s.log.Debug("plugin drained", "generation", in.gen, "pid", in.pid)
}

// watchExit waits for in's process to exit and handles an exit nobody asked
// for.
func (s *slot) watchExit(in *instance) {
	<-in.proc.Exited()
	s.lost(in, in.proc.ExitErr())
}

// lost handles an instance that can no longer serve: its process exited, or
// its streams broke. If it was current, calls wait while a restart with
// backoff brings the same executable back.
func (s *slot) lost(in *instance, cause error) {
	first := false
	in.lostOne.Do(func() { first = true })
	if !first {
		return
	}
	cause = exitCause(in, cause)
	s.mu.Lock()
	if s.current != in || s.stopping {
		// A draining instance, or the slot is stopping: its drain or
		// stop takes care of the process.
		s.mu.Unlock()
		in.retire()
		return
	}
	s.setCurrentLocked(nil)
	young := time.Since(in.started) <= stableAfter
	crash := isCrash(cause)
	if !young || !crash {
		// The backoff grows only for an executable that keeps dying by
		// itself; one killed from outside comes back at once.
		s.backoff = 0
	}
	s.lastError = fmt.Sprintf("generation %d (pid %d) exited: %v", in.gen, in.pid, exitText(cause))
	if crash && s.crashedLocked(in.bin.hash, young) {
		why := fmt.Sprintf("its processes died %d times in a row within %v of starting; last: %s", s.crashes, stableAfter, s.lastError)
		s.wg.Add(1)
		s.quarantineLocked(in.bin.hash, why)
		s.mu.Unlock()
		in.retire()
		s.restarts.Add(1)
		go func() {
			defer s.wg.Done()
			in.proc.Kill()
		}()
		return
	}
	delay := s.nextBackoffLocked()
	s.state = waitingState(delay)
	s.nextRestart = time.Now().Add(delay)
	// Added under mu while not stopping: stop sets stopping under mu
	// before it waits, so these are counted before it waits.
	s.wg.Add(2)
	s.mu.Unlock()
	in.retire()
	s.restarts.Add(1)
	s.log.Error("plugin exited; restarting", "generation", in.gen, "pid", in.pid, "cause", exitText(cause), "backoff", delay)
	// Kill makes sure a process with broken streams is gone, and reaps it.
	go func() {
		defer s.wg.Done()
		in.proc.Kill()
	}()
	go func() {
		defer s.wg.Done()
		s.restart(in.bin, delay)
	}()
}

// waitingState is the state of a slot with no instance whose next start is
// delay away: calls wait for a start that comes soon (starting), and fail at
// once when it is further off than they would wait (failed).
func waitingState(delay time.Duration) string {
	if delay >= restartWait {
		return stateFailed
	}
	return stateStarting
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// restart brings the slot back after delay: from b, the executable that
// was running, or, when b is nil (a first start failed), from the configured
// path. It retries with growing delays until an instance serves (or a swap
// got there first) or the slot stops.
func (s *slot) restart(b *binary, delay time.Duration) {
	for {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
		}
		err := s.restartOnce(b)
		if err == nil || s.ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.lastError = "restart: " + err.Error()
		hash := s.failedHash // a first start's executable, known once read
		if b != nil {
			hash = b.hash
		}
		if hash != "" && s.current == nil && !s.stopping && s.crashedLocked(hash, true) {
			why := fmt.Sprintf("it failed to start or died young %d times in a row; last: %s", s.crashes, s.lastError)
			s.quarantineLocked(hash, why)
			s.mu.Unlock()
			return
		}
		delay = s.nextBackoffLocked()
		if s.current == nil && !s.stopping {
			s.state = waitingState(delay)
			s.nextRestart = time.Now().Add(delay)
		}
		s.mu.Unlock()
		s.log.Error("plugin restart failed", "error", err, "retry_in", delay)
	}
}

// restartOnce makes one attempt; it succeeds at once when the slot has an
// instance again or is stopping.
func (s *slot) restartOnce(b *binary) error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	s.mu.Lock()
	skip := s.current != nil || s.stopping
	gen := s.generation + 1
	s.mu.Unlock()
	if skip {
		return nil
	}
	if b == nil {
		_, err := s.swapLocked(s.ctx, true, "start")
		return err
	}
	cfg, listeners := s.config()
	in, err := s.prepare(s.ctx, cfg, listeners, b, gen)
	if err != nil {
		return err
	}
	s.commit(in, commitRestart)
	return nil
}

// nextBackoffLocked returns the delay before the next restart attempt and
// doubles the one after it.
func (s *slot) nextBackoffLocked() time.Duration {
	d := s.backoff
	s.backoff = min(max(2*s.backoff, minBackoff), maxBackoff)
	return d
}

// swap replaces the running executable with the one at the slot's path:
// snapshot, start, switch, drain the old. Without force, an executable whose
// content is already running is left alone (ErrUnchanged), and so is one
// that failed already and has not changed since. Any failure keeps the old
// instance serving and records last_error.
func (s *slot) swap(ctx context.Context, force bool, reason string) (*instance, error) {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	in, err := s.swapLocked(ctx, force, reason)
	if err != nil && !force && s.stillWriting(err) {
		// The watcher reported a file that a writer has been at since;
		// the watcher reports it again once it settles. Nothing failed
		// yet.
		s.log.Info("executable still being written; waiting for it to settle", "reason", reason, "error", err)
		return in, err
	}
	if err != nil && !errors.Is(err, ErrUnchanged) {
		// The state stays: with an instance the slot serves on, and
		// without one a start or restart is on its way, which sets it.
		s.mu.Lock()
		s.lastError = err.Error()
		if s.current != nil && !errors.Is(err, ErrStopped) {
			s.swapFails.Add(1)
		}
		s.mu.Unlock()
		s.log.Error("plugin swap failed; the running version keeps serving", "reason", reason, "error", err)
	}
	return in, err
}

// stillWriting reports whether a swap's failure to read the executable is
// the mark of a writer still at it rather than a bad file.
func (s *slot) stillWriting(err error) bool {
	if errors.Is(err, errChanging) {
		return true
	}
	if !errors.Is(err, ErrNotExecutable) || s.k.watcher == nil {
		return false
	}
	s.mu.Lock()
	path := s.cfg.Path
	s.mu.Unlock()
	return s.k.watcher.moving(path)
}

func (s *slot) swapLocked(ctx context.Context, force bool, reason string) (*instance, error) {
	s.mu.Lock()
	cfg, listeners, cur, stopping, failed, gen := s.cfg, s.listeners, s.current, s.stopping, s.failedHash, s.generation+1
	s.mu.Unlock()
	if stopping {
		return nil, ErrStopped
	}
	t0 := time.Now()
	b, release, err := s.k.snapshot(cfg.Path)
	if err != nil {
		return nil, err
	}
	defer release()
	s.log.Debug("executable read", "sha256", b.hash[:12], "took", time.Since(t0).Round(time.Millisecond))
	if !force && cur != nil && cur.bin.hash == b.hash {
		return cur, ErrUnchanged
	}
	if !force && failed == b.hash {
		return nil, fmt.Errorf("%w: sha256 %s failed before", ErrUnchanged, b.hash[:12])
	}
	ctx, cancel := mergeCancel(ctx, s.ctx)
	defer cancel()
	in, err := s.prepare(ctx, cfg, listeners, b, gen)
	if err != nil {
		s.mu.Lock()
		s.failedHash = b.hash
		s.mu.Unlock()
		return nil, err
	}
	if cur == nil || cur.bin.hash != b.hash {
		// A new executable starts with a clean record: the restart
		// backoff of a crash-looping predecessor is not its own.
		s.mu.Lock()
		s.backoff = 0
		s.mu.Unlock()
	}
	how := commitStart
	if cur != nil {
		how = commitSwap
	}
	s.commit(in, how)
	if cur != nil {
		s.log.Info("plugin swapped", "reason", reason, "generation", in.gen, "version", in.version,
			"pid", in.pid, "from_generation", cur.gen, "from_version", cur.version, "took", time.Since(t0).Round(time.Millisecond))
	}
	return in, nil
}

// start brings the slot up for the first time. A failure is recorded and
// retried with backoff, as after a crash: the kernel serves what it can.
func (s *slot) start(ctx context.Context) error {
	_, err := s.swap(ctx, true, "start")
	if err == nil || s.ctx.Err() != nil || ctx.Err() != nil {
		return err
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return err
	}
	delay := max(s.nextBackoffLocked(), minBackoff)
	s.state = waitingState(delay)
	s.nextRestart = time.Now().Add(delay)
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		s.restart(nil, delay)
	}()
	return err
}

// runKicks swaps on each file change the watcher reports, one at a time;
// changes that arrive during a swap coalesce into one more.
func (s *slot) runKicks() {
	for {
		select {
		case <-s.kick:
			_, _ = s.swap(s.ctx, false, "file changed")
		case <-s.ctx.Done():
			return
		}
	}
}

// fileChanged is the watcher's signal.
func (s *slot) fileChanged() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// stop drains the slot's instances (each up to drain_timeout, bounded by
// ctx) and stops it. Calls arriving afterwards fail with ErrStopped.
func (s *slot) stop(ctx context.Context) {
	s.mu.Lock()
	s.stopping = true
	s.state = stateDraining
	s.mu.Unlock()
	s.cancel() // aborts starts, restarts and waits in progress
	s.swapMu.Lock()
	s.mu.Lock()
	cur := s.current
	if cur != nil {
		s.setCurrentLocked(nil)
		s.draining = append(s.draining, cur)
	}
	s.mu.Unlock()
	s.swapMu.Unlock()
	if cur != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.drain(cur)
		}()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// Past the shutdown deadline: kill what is left.
		s.mu.Lock()
		left := slices.Clone(s.draining)
		s.mu.Unlock()
		for _, in := range left {
			in.proc.Kill()
		}
		<-done
	}
	s.mu.Lock()
	s.state = stateStopped
	s.mu.Unlock()
}

// pluginInfo is one row of `ctl plugins`.
type pluginInfo struct {
	Name       string         `json:"name"`
	Path       string         `json:"path"`
	PID        int            `json:"pid"`
	Generation uint64         `json:"generation"`
	Version    string         `json:"version"`
	State      string         `json:"state"`
	Inflight   int64          `json:"inflight"`
	Served     uint64         `json:"served"`
	Errors     uint64         `json:"errors"`
	Restarts   uint64         `json:"restarts"`
	LastSwap   string         `json:"last_swap"`
	LastError  string         `json:"last_error"`
	SHA256     string         `json:"sha256"`
	Draining   []drainingInfo `json:"draining"`
	// Rollbacks counts swaps undone because the new version answered
	// clearly worse.
	Rollbacks uint64 `json:"rollbacks"`
	// Swaps counts swaps to a new process; SwapFailures those that failed
	// and left the running version serving.
	Swaps        uint64 `json:"swaps"`
	SwapFailures uint64 `json:"swap_failures"`
	// NextRestart is when a restart is due, with the backoff that led to
	// it; empty when none is.
	NextRestart string `json:"next_restart,omitempty"`
	Backoff     string `json:"backoff,omitempty"`
	// Quarantined is the sha256 of an executable the slot will not
	// restart until its file changes or `ctl reload` forces it.
	Quarantined string `json:"quarantined,omitempty"`
	// RollbackUntil is when the rollback window of the last swap closes.
	RollbackUntil string `json:"rollback_until,omitempty"`
}

type drainingInfo struct {
	PID        int    `json:"pid"`
	Generation uint64 `json:"generation"`
	Version    string `json:"version"`
	Inflight   int64  `json:"inflight"`
}

func (s *slot) info() pluginInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := pluginInfo{
		Name:        s.name,
		Path:        s.cfg.Path,
		Generation:  s.generation,
		State:       s.state,
		Served:      s.served.Load(),
		Errors:      s.errs.Load(),
		Restarts:    s.restarts.Load(),
		LastError:   s.lastError,
		Draining:    []drainingInfo{},
		Rollbacks:   s.rollbacks.Load(),
		Quarantined: s.quarantined,
	}
	p.Swaps, p.SwapFailures = s.swaps.Load(), s.swapFails.Load()
	if !s.nextRestart.IsZero() {
		p.NextRestart = s.nextRestart.UTC().Format(time.RFC3339Nano)
		p.Backoff = max(time.Until(s.nextRestart), 0).Round(time.Millisecond).String()
	}
	if w := s.window.Load(); w != nil {
		p.RollbackUntil = w.until.UTC().Format(time.RFC3339)
	}
	if !s.lastSwap.IsZero() {
		p.LastSwap = s.lastSwap.UTC().Format(time.RFC3339)
	}
	if c := s.current; c != nil {
		p.PID, p.Version, p.SHA256, p.Inflight = c.pid, c.version, c.bin.hash, c.inflight()
	}
	for _, d := range s.draining {
		p.Inflight += d.inflight()
		p.Draining = append(p.Draining, drainingInfo{PID: d.pid, Generation: d.gen, Version: d.version, Inflight: d.inflight()})
	}
	return p
}

// runningID is the identity the file at path had when the current
// instance's executable was read from it.
func (s *slot) runningID(path string) (fileID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil || s.current.bin.source != path {
		return fileID{}, false
	}
	return s.current.bin.id, true
}

// keep adds the hashes the slot may still need to keep.
func (s *slot) keep(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.history {
		keep[h] = true
	}
	if w := s.window.Load(); w != nil {
		keep[w.prev.hash] = true
	}
	if s.current != nil {
		keep[s.current.bin.hash] = true
	}
	for _, d := range s.draining {
		keep[d.bin.hash] = true
	}
}

// mergeCancel returns a context that has a's values and deadline and is
// also cancelled when b is.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(a)
	stop := context.AfterFunc(b, func() { cancel(context.Cause(b)) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
