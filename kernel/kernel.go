package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/kernel/admin"
	"github.com/switchyard-dev/switchyard/kernel/config"
	"github.com/switchyard-dev/switchyard/plugins/proto"
	"github.com/switchyard-dev/switchyard/state"
)

// Options configure a Kernel. The zero value runs the embedded default
// configuration with plugin paths relative to the running executable.
type Options struct {
	// ConfigPath is the configuration file; "" runs the embedded default.
	ConfigPath string
	// ExecDir resolves the embedded default's relative paths; "" means the
	// directory of the running executable.
	ExecDir string
	// DataDir overrides state.dir.
	DataDir string
	// Socket overrides the admin socket path.
	Socket string
	// Logger receives the kernel's log; nil means slog.Default().
	Logger *slog.Logger
	// Level is the log level `ctl log-level` adjusts; nil means a new
	// LevelVar at Info.
	Level *slog.LevelVar
	// Version is the kernel's version, as `ctl status` shows it.
	Version string
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
	// HandleSignals makes Run handle SIGTERM and SIGINT (shutdown; a
	// second one stops waiting for calls in flight), SIGHUP (reload the
	// configuration) and SIGUSR2 (upgrade the kernel: see Upgrade).
	HandleSignals bool
	// Executable and Args are what an upgrade starts (the executable on
	// disk then, with the same arguments); "" and nil mean the running
	// executable's path and os.Args[1:].
	Executable string
	Args       []string
	// Pprof, when set, is a TCP address on which the kernel serves
	// net/http/pprof under /debug/pprof/ (serve -pprof).
	Pprof string
	// Signals, when set with HandleSignals, is a channel the caller
	// registered with signal.Notify for those signals as early as it could
	// (see CatchSignals), so that a signal arriving while the kernel starts
	// is handled rather than lost or fatal.
	Signals chan os.Signal
}

// CatchSignals registers for the signals the kernel handles and returns the
// channel to pass as Options.Signals. Call it first thing in main: until
// then, SIGTERM kills the process outright.
func CatchSignals() chan os.Signal {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	return ch
}

// Kernel owns the listening sockets, the plugin slots and the admin socket.
// Create one with New and run it with Run.
type Kernel struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	getenv  func(string) string
	started time.Time

	// Fixed for the kernel's life once Run has prepared them.
	exe       string   // the executable an upgrade starts
	args      []string // its arguments
	stateDir  string
	snapDir   string
	cred      *credential // whom the kernel became after binding; nil: who it was started as
	store     state.Store // set by Run before anything uses it
	baseDir   string      // the configuration's directory: plugins run in it
	socketDir string
	adminPath string

	sockets  *socketTable
	watcher  *watcher
	snapMu   sync.Mutex     // serialises snapshot writes and their garbage collection
	snapRefs map[string]int // snapshots taken and not yet released; guarded by snapMu

	reloadMu sync.Mutex // serialises configuration reloads

	rescan time.Duration // the watcher's rescan period; 0 means the default (tests shorten it)

	adminLn   net.Listener // set by Run
	lockMu    sync.Mutex
	lock      *os.File    // the state directory's lock; guarded by lockMu once Run has started
	storeOnce sync.Once   // closes the store and the lock
	upgradeMu sync.Mutex  // one upgrade at a time
	upgraded  atomic.Bool // this kernel has handed over to a new one
	gcHold    atomic.Bool // no snapshot garbage collection: an old kernel still runs

	metrics kernelMetrics // the Prometheus endpoint (metrics.go)

	connIDs atomic.Uint64 // numbers line connections kernel-wide
	tokens  atomic.Uint64 // numbers plugin processes kernel-wide, for line sessions

	mu        sync.Mutex
	cfg       *config.Config         // guarded by mu
	slots     map[string]*slot       // guarded by mu
	staged    []*slot                // started by a reload not yet committed; guarded by mu
	listeners map[string]*listener   // guarded by mu
	timers    map[string]*timerEntry // guarded by mu

	ctx      context.Context // Run's; cancelled when shutdown begins
	bgMu     sync.Mutex
	closing  bool           // no more background work; guarded by bgMu
	wg       sync.WaitGroup // background work, waited for before the slots stop
	ready    chan struct{}
	shutdown chan struct{} // closed by Shutdown
	shutOnce sync.Once
	// forceCtx bounds every wait for calls to finish: drains, retired
	// front ends, shutdown. A second SIGTERM or SIGINT cancels it.
	forceCtx context.Context
	force    context.CancelFunc
}

// listener is one configured listener: its socket, front end and route.
type listener struct {
	cfg   atomic.Pointer[config.Listener] // a reload may update it
	sock  *socket
	srv   front
	route *route
	done  chan struct{} // closed when Serve has returned
}

// New loads the configuration and returns a Kernel ready to Run.
func New(opts Options) (*Kernel, error) {
	k := &Kernel{
		opts:      opts,
		log:       opts.Logger,
		level:     opts.Level,
		getenv:    opts.Getenv,
		sockets:   newSocketTable(),
		slots:     make(map[string]*slot),
		listeners: make(map[string]*listener),
		timers:    make(map[string]*timerEntry),
		ready:     make(chan struct{}),
		shutdown:  make(chan struct{}),
	}
	k.forceCtx, k.force = context.WithCancel(context.Background())
	k.metrics.reg = k.newRegistry()
	if k.log == nil {
		k.log = slog.Default()
	}
	if k.level == nil {
		k.level = new(slog.LevelVar)
	}
	if k.getenv == nil {
		k.getenv = os.Getenv
	}
	k.exe, k.args = opts.Executable, opts.Args
	if k.exe == "" {
		// Resolved now: once the file is replaced, the running process's
		// own link names the old one.
		if exe, err := os.Executable(); err == nil {
			k.exe = exe
		}
	}
	if k.args == nil && len(os.Args) > 1 {
		k.args = slices.Clone(os.Args[1:])
	}
	cfg, err := k.loadConfig()
	if err != nil {
		return nil, err
	}
	k.cfg = cfg
	k.baseDir = cfg.Dir
	return k, nil
}

// LoadConfig returns the configuration Options select: the file, or the
// embedded default with paths relative to ExecDir.
func LoadConfig(opts Options) (*config.Config, error) {
	cfg, err := loadConfigFile(opts)
	if err != nil {
		return nil, err
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := cfg.ExpandRuntime(runtimeDir(getenv)); err != nil {
		return nil, err
	}
	return cfg, nil
}

func loadConfigFile(opts Options) (*config.Config, error) {
	if opts.ConfigPath != "" {
		return config.Load(opts.ConfigPath)
	}
	dir := opts.ExecDir
	if dir == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locate executable for the default config: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return nil, err
		}
		dir = filepath.Dir(exe)
	}
	return config.Default(dir)
}

func (k *Kernel) loadConfig() (*config.Config, error) { return LoadConfig(k.opts) }

// Config returns the configuration the kernel runs.
func (k *Kernel) Config() *config.Config {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cfg
}

// Ready is closed once Run has bound every listener and tried to start every
// plugin once.
func (k *Kernel) Ready() <-chan struct{} { return k.ready }

// AdminSocket is the admin socket's path; valid once Ready is closed.
func (k *Kernel) AdminSocket() string { return k.adminPath }

// Shutdown asks Run to stop gracefully. It does not wait.
func (k *Kernel) Shutdown() {
	k.shutOnce.Do(func() { close(k.shutdown) })
}

// paths resolves the kernel's directories and admin socket.
func (k *Kernel) paths(cfg *config.Config) (stateDir, adminPath string, err error) {
	stateDir = k.opts.DataDir
	if stateDir == "" {
		stateDir = cfg.State.Dir
	}
	if stateDir == "" {
		stateDir = defaultStateDir(k.getenv)
	}
	if stateDir, err = filepath.Abs(stateDir); err != nil {
		return "", "", err
	}
	adminPath = k.opts.Socket
	if adminPath == "" {
		adminPath = k.getenv("SWITCHYARD_SOCKET")
	}
	if adminPath == "" {
		adminPath = cfg.Admin.Socket
	}
	if adminPath == "" {
		adminPath = admin.DefaultSocket(k.getenv)
	}
	if adminPath, err = filepath.Abs(adminPath); err != nil {
		return "", "", err
	}
	return stateDir, adminPath, nil
}

// Run serves until ctx is done or Shutdown is called, then shuts down
// gracefully: it stops accepting, lets calls in flight finish (each plugin
// up to its drain_timeout), stops the plugins, removes its sockets and
// returns nil. It returns an error only when it could not start (a busy
// address, a locked state directory, a live admin socket); in that case
// nothing it started is left behind.
func (k *Kernel) Run(ctx context.Context) (err error) {
	k.started = time.Now()
	cfg := k.Config()
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	k.ctx = runCtx
	// A reload waits until the kernel has started.
	k.reloadMu.Lock()
	startupDone := sync.OnceFunc(k.reloadMu.Unlock)
	defer startupDone()
	if k.opts.HandleSignals {
		stopSignals := k.handleSignals(runCtx)
		defer stopSignals()
	}

	// A kernel started by an upgrade gets its sockets from the kernel it
	// replaces; tell that one if we cannot start.
	su, err := k.inheritUpgrade()
	if err != nil {
		return err
	}
	var cleanups []func()
	defer func() {
		if err != nil {
			for _, f := range slices.Backward(cleanups) {
				f()
			}
			if su != nil {
				su.fail(err)
			}
		}
	}()
	if su != nil {
		cleanups = append(cleanups, su.closeRest)
	}
	if k.stateDir, k.adminPath, err = k.paths(cfg); err != nil {
		return err
	}

	cred, err := lookupCredential(cfg.Privileges)
	if err != nil {
		return err
	}
	k.cred = cred
	if err := privateDir(k.stateDir, cred.owner()); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if su == nil {
		lock, err := lockStateDir(k.stateDir)
		if err != nil {
			return err
		}
		k.lock = lock
		store, err := state.Open(filepath.Join(k.stateDir, "store.db"), nil)
		if err != nil {
			lock.Close()
			return err
		}
		k.store = k.meter(store)
	} else {
		// The old kernel holds the store until it has handed everything
		// over; calls that reach it wait, and snapshots it runs stay.
		k.store = k.meter(su.store)
		k.gcHold.Store(true)
	}
	cleanups = append(cleanups, func() { k.closeStore() })
	k.snapDir = filepath.Join(k.stateDir, "plugins")
	if err := privateDir(k.snapDir, cred.owner()); err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	rt := runtimeDir(k.getenv)
	if err := privateDir(rt, cred.owner()); err != nil {
		return fmt.Errorf("runtime directory: %w", err)
	}
	k.socketDir = pluginSocketDir(rt, k.stateDir, os.Getpid())
	if su == nil {
		// Killed plugins leave their sockets behind: start from empty
		// directories. (A kernel started by an upgrade leaves the old
		// kernel's, whose plugins still run.)
		if err := removeSocketDirs(rt, k.stateDir); err != nil {
			return err
		}
	}
	if err := privateDir(k.socketDir, cred.owner()); err != nil {
		return err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(k.socketDir) })

	var adminLn net.Listener
	if f := su.adminFile(); f != nil {
		adminLn, err = admin.FileListener(f, k.adminPath)
		f.Close()
	} else {
		adminLn, err = admin.Listen(k.adminPath)
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	k.adminLn = adminLn
	cleanups = append(cleanups, func() { adminLn.Close() })

	// Bind every listener before anything runs, so a busy address fails
	// the start cleanly: or take the socket the old kernel (or systemd)
	// handed over for it.
	activated, err := k.systemdSockets()
	if err != nil {
		return err
	}
	socks := make(map[string]*socket)
	for _, lc := range cfg.Listeners {
		s, err := k.listenerSocket(lc, su, activated)
		if err != nil {
			return fmt.Errorf("listener %q: %w", lc.Name, err)
		}
		socks[lc.Name] = s
		cleanups = append(cleanups, func() { k.sockets.release(s) })
	}
	metricsLn, err := k.listenMetrics(cfg.Metrics.Address, su)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		cleanups = append(cleanups, func() { metricsLn.Close() })
	}
	activated.closeRest(k.log)
	if su != nil {
		su.closeRest()
		k.connIDs.Store(su.inv.ConnIDs)
	}
	if k.watcher, err = newWatcher(k.log); err != nil {
		return fmt.Errorf("file watcher: %w", err)
	}
	if k.rescan > 0 {
		k.watcher.rescan = k.rescan
	}
	cleanups = append(cleanups, func() { k.watcher.fsw.Close() })

	// Every socket is bound: a kernel started as root becomes its
	// configured user before it starts any plugin.
	if cred != nil {
		files := []string{filepath.Dir(k.adminPath), k.adminPath}
		for _, lc := range cfg.Listeners {
			if lc.Network() == "unix" {
				files = append(files, lc.SocketAddress())
			}
		}
		if err := cred.handOver([]string{k.stateDir, rt}, files); err != nil {
			return fmt.Errorf("privileges: handing the kernel's files to %s: %w", cred.user, err)
		}
		if err := cred.drop(); err != nil {
			return fmt.Errorf("privileges: becoming %s:%s: %w", cred.user, cred.group, err)
		}
		k.log.Info("privileges dropped", "user", cred.user, "uid", cred.uid, "group", cred.group, "gid", cred.gid)
	}

	// From here on Run does not fail: what goes wrong is reported and
	// retried while the kernel serves.
	k.log.Info("kernel starting", "version", k.opts.Version, "pid", os.Getpid(), "config", cfg.Source,
		"state", k.stateDir, "admin", k.adminPath)

	slots := make(map[string]*slot)
	for name, pc := range cfg.Plugins {
		s := newSlot(k, pc)
		s.setConfig(pc, routedListeners(cfg, name))
		slots[name] = s
	}
	k.mu.Lock()
	k.slots = slots
	k.mu.Unlock()
	for _, lc := range cfg.Listeners {
		k.startListener(lc, socks[lc.Name], slots[lc.Plugin])
	}
	if su == nil {
		k.startTimers(nil)
	}
	k.startMetrics(cfg.Metrics.Address, metricsLn)

	if k.opts.Pprof != "" {
		pprofCtx, stopPprof := context.WithCancel(runCtx)
		pprofDone := make(chan struct{})
		go func() {
			defer close(pprofDone)
			servePprof(pprofCtx, k.opts.Pprof, k.log)
		}()
		defer func() {
			stopPprof()
			<-pprofDone
		}()
	}

	adminSrv := admin.NewServer(k, k.log.With("component", "admin"))
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	go func() { adminDone <- adminSrv.Serve(adminCtx, adminLn) }()

	watchCtx, stopWatch := context.WithCancel(runCtx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		k.watcher.run(watchCtx)
	}()
	memDone := make(chan struct{})
	go func() {
		defer close(memDone)
		k.watchMemory(watchCtx)
	}()

	// Watch from the start, so a file replaced while its plugin starts is
	// not missed.
	k.watcher.set(slices.Collect(maps.Values(slots)))
	var starts sync.WaitGroup
	for _, s := range slots {
		starts.Add(1)
		go func() {
			defer starts.Done()
			_ = s.start(runCtx)
		}()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.runKicks()
		}()
	}
	startsDone := make(chan struct{})
	var carried sync.WaitGroup
	go func() {
		starts.Wait()
		k.watcher.set(slices.Collect(maps.Values(slots)))
		if su != nil {
			carried.Add(1)
			go func() {
				defer carried.Done()
				k.carryOn(runCtx, su)
			}()
		} else if _, err := k.sd().Ready(); err != nil {
			k.log.Warn("systemd notify", "error", err)
		}
		startupDone()
		close(k.ready)
		k.log.Info("kernel ready", "listeners", len(cfg.Listeners), "plugins", len(slots), "took", time.Since(k.started).Round(time.Millisecond))
		close(startsDone)
	}()

	select {
	case <-runCtx.Done():
	case <-k.shutdown:
	}
	k.log.Info("kernel shutting down")
	if !k.upgraded.Load() {
		if _, err := k.sd().Stopping(); err != nil {
			k.log.Warn("systemd notify", "error", err)
		}
	}
	cancelRun() // aborts plugin starts and reloads still under way
	<-startsDone
	carried.Wait()
	// Let a reload under way finish or abort, and refuse new ones, before
	// stopAll takes stock of listeners and slots.
	k.reloadMu.Lock()
	k.bgMu.Lock()
	k.closing = true
	k.bgMu.Unlock()
	k.reloadMu.Unlock()
	stopWatch()
	<-watchDone
	<-memDone
	k.stopAll()
	k.stopMetrics()
	stopAdmin()
	if err := <-adminDone; err != nil {
		k.log.Warn("admin server", "error", err)
	}
	_ = os.RemoveAll(k.socketDir)
	if err := k.closeStore(); err != nil {
		k.log.Error("closing the store", "error", err)
	}
	k.log.Info("kernel stopped", "uptime", time.Since(k.started).Round(time.Millisecond))
	return nil
}

// stopAll shuts the listeners and timers down (calls in flight finish,
// bounded by the longest drain_timeout; a second signal cuts that short),
// then stops every plugin.
func (k *Kernel) stopAll() {
	k.mu.Lock()
	ls := slices.Collect(maps.Values(k.listeners))
	slots := slices.Collect(maps.Values(k.slots))
	timers := slices.Collect(maps.Values(k.timers))
	k.listeners = map[string]*listener{}
	k.timers = map[string]*timerEntry{}
	k.mu.Unlock()

	grace := time.Duration(0)
	for _, s := range slots {
		cfg, _ := s.config()
		grace = max(grace, cfg.DrainTimeout.D())
	}
	ctx, cancel := context.WithTimeout(k.forceCtx, grace)
	defer cancel()

	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.stopListener(ctx, l)
		}()
	}
	for _, e := range timers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.stopTimer(ctx, e)
		}()
	}
	wg.Wait()
	k.wg.Wait() // work a reload left running: retired listeners and slots
	for _, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop(ctx)
		}()
	}
	wg.Wait()
}

// startListener starts the front end of lc on sock, routed to s. The
// configuration has been validated, so every protocol in it has a front end.
func (k *Kernel) startListener(lc *config.Listener, sock *socket, s *slot) *listener {
	l := &listener{sock: sock, route: newRoute(lc.Name, s), done: make(chan struct{})}
	l.cfg.Store(lc)
	l.route.latency = newRequestLatency(lc.Name, lc.Protocol)
	srv, err := newFront(lc, l.route, sock, k.log, &k.connIDs)
	if err != nil {
		panic(err) // config.Parse lets through only protocols newFront knows
	}
	l.srv = srv
	view := sock.view()
	go func() {
		defer close(l.done)
		if err := l.srv.Serve(view); err != nil {
			k.log.Error("listener stopped", "listener", lc.Name, "error", err)
		}
	}()
	k.mu.Lock()
	k.listeners[lc.Name] = l
	k.mu.Unlock()
	return l
}

// stopListener shuts l down gracefully within ctx and releases its socket.
func (k *Kernel) stopListener(ctx context.Context, l *listener) {
	if err := l.srv.Shutdown(ctx); err != nil {
		k.log.Warn("listener shutdown cut short", "listener", l.cfg.Load().Name, "error", err)
	}
	<-l.done
	k.sockets.release(l.sock)
}

// routedListeners lists the listeners of cfg that route to plugin name, and
// its timers as listeners of protocol "timer".
func routedListeners(cfg *config.Config, name string) []*proto.Listener {
	var ls []*proto.Listener
	for _, l := range cfg.Listeners {
		if l.Plugin == name {
			ls = append(ls, &proto.Listener{Name: l.Name, Protocol: l.Protocol, Address: l.Address})
		}
	}
	return append(ls, timerRoutes(cfg, name)...)
}

// snapshot copies the executable at path into the snapshot directory. The
// snapshot is safe from garbage collection until release is called, by
// which time a slot that runs it has it in its history.
func (k *Kernel) snapshot(path string) (b *binary, release func(), err error) {
	k.snapMu.Lock()
	defer k.snapMu.Unlock()
	if b, err = snapshot(path, k.snapDir); err != nil {
		return nil, nil, err
	}
	if k.snapRefs == nil {
		k.snapRefs = make(map[string]int)
	}
	k.snapRefs[b.hash]++
	var once sync.Once
	return b, func() {
		once.Do(func() {
			k.snapMu.Lock()
			defer k.snapMu.Unlock()
			if k.snapRefs[b.hash]--; k.snapRefs[b.hash] <= 0 {
				delete(k.snapRefs, b.hash)
			}
		})
	}, nil
}

// gcSnapshots removes executables no slot runs or keeps for rollback.
func (k *Kernel) gcSnapshots() {
	if k.gcHold.Load() {
		return
	}
	// snapMu first: what the slots keep must not change between taking
	// stock and removing files (a slot updates its history, then releases
	// its snapshot reference).
	k.snapMu.Lock()
	defer k.snapMu.Unlock()
	k.mu.Lock()
	slots := slices.Collect(maps.Values(k.slots))
	slots = append(slots, k.staged...)
	k.mu.Unlock()
	keep := make(map[string]bool)
	for _, s := range slots {
		s.keep(keep)
	}
	for h := range k.snapRefs {
		keep[h] = true
	}
	if err := gcSnapshots(k.snapDir, keep); err != nil {
		k.log.Warn("removing old plugin snapshots", "error", err)
	}
}

// handleSignals turns signals into shutdown and reloads until the returned
// func is called.
func (k *Kernel) handleSignals(ctx context.Context) func() {
	ch := k.opts.Signals
	if ch == nil {
		ch = CatchSignals()
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case sig := <-ch:
				switch sig {
				case syscall.SIGUSR2:
					k.log.Info("SIGUSR2: upgrading the kernel")
					k.spawn(func() {
						if _, err := k.Upgrade(ctx); err != nil {
							k.log.Error("upgrade failed; this kernel carries on", "error", err)
						}
					})
				case syscall.SIGHUP:
					k.log.Info("SIGHUP: reloading the configuration")
					k.spawn(func() {
						if _, err := k.ReloadConfig(ctx); err != nil {
							k.log.Error("configuration reload failed; nothing changed", "error", err)
						}
					})
				default:
					select {
					case <-k.shutdown:
						k.log.Warn("second signal: not waiting for calls in flight", "signal", sig.String())
						k.force()
					default:
						k.log.Info("signal: shutting down", "signal", sig.String())
						k.Shutdown()
					}
				}
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

// spawn runs f in a goroutine that shutdown waits for, unless shutdown has
// begun, in which case f does not run.
func (k *Kernel) spawn(f func()) bool {
	k.bgMu.Lock()
	defer k.bgMu.Unlock()
	if k.closing {
		return false
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		f()
	}()
	return true
}

// startTimers starts every configured timer, on the schedule starts gives
// (from the kernel an upgrade replaced) or a fresh one.
func (k *Kernel) startTimers(starts map[string]time.Time) {
	k.mu.Lock()
	cfg, slots := k.cfg, k.slots
	k.mu.Unlock()
	for _, tc := range cfg.Timers {
		k.startTimerAt(tc, slots[tc.Plugin], starts[tc.Name])
	}
}
