package kernel

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/listeners/line"
	"github.com/switchyard-dev/switchyard/state"
)

// A kernel upgrade replaces the kernel's own process without closing a
// socket or dropping a session (ctl upgrade, SIGUSR2):
//
//  1. The old kernel starts the executable now on disk with its own
//     arguments, handing it every listening socket and the admin socket as
//     inherited descriptors, and an inventory that names them.
//  2. The new kernel serves on those sockets instead of binding its own
//     (listeners are matched by name; the configuration is read afresh),
//     starts its plugins and reports ready. Until then the old kernel
//     serves as before; a new kernel that exits, or is not ready within
//     [upgrade] timeout, is killed and the old one carries on.
//  3. The old kernel stops accepting (connections wait in the sockets'
//     backlogs, which the new kernel drains), lets its HTTP, SCGI and DNS
//     calls finish, stops its timers and hands their schedules over, and
//     hands over every line session: its socket, state, unread input and
//     unsent output. Then it stops its plugins, closes the store and
//     releases the state directory's lock, which the new kernel takes, and
//     exits.

// UpgradeResult is the answer to `ctl upgrade`.
type UpgradeResult struct {
	OldPID int `json:"old_pid"`
	NewPID int `json:"new_pid"`
	// ReadyMS is the time from the command to the new kernel serving on
	// every socket; TookMS to the old one having handed everything over.
	ReadyMS  float64 `json:"ready_ms"`
	TookMS   float64 `json:"took_ms"`
	Sessions int     `json:"sessions"` // line sessions handed over
}

// Upgrade replaces the kernel's process with a new one started from its
// executable on disk, handing over every socket and session. It returns
// once the new kernel serves and the old one has handed everything over;
// Run then returns. On an error before the new kernel is ready, nothing has
// changed.
func (k *Kernel) Upgrade(ctx context.Context) (*UpgradeResult, error) {
	k.upgradeMu.Lock()
	defer k.upgradeMu.Unlock()
	// No reload may change what is handed over meanwhile.
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()
	k.bgMu.Lock()
	closing := k.closing
	k.bgMu.Unlock()
	if closing || k.ctx == nil || k.ctx.Err() != nil || k.upgraded.Load() {
		return nil, ErrShuttingDown
	}
	t0 := time.Now()
	res := &UpgradeResult{OldPID: os.Getpid()}
	hc, cmd, err := k.startSuccessor(ctx)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	res.NewPID = cmd.Process.Pid
	res.ReadyMS = ms(time.Since(t0))
	k.log.Info("upgrade: the new kernel is ready; handing over", "new_pid", res.NewPID, "took", time.Since(t0).Round(time.Millisecond))
	if _, err := k.sd().MainPID(res.NewPID); err != nil {
		k.log.Warn("upgrade: telling systemd the new main pid", "error", err)
	}
	// From here on the new kernel serves: the old one hands over what it
	// can and leaves, whatever goes wrong.
	k.upgraded.Store(true)
	res.Sessions = k.handOver(hc)
	res.TookMS = ms(time.Since(t0))
	k.log.Info("upgrade: handed over; exiting", "new_pid", res.NewPID, "sessions", res.Sessions, "took", time.Since(t0).Round(time.Millisecond))
	k.Shutdown()
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startSuccessor starts the new kernel and waits for its ready. On error
// the new kernel is stopped and nothing has changed.
func (k *Kernel) startSuccessor(ctx context.Context) (*handoverConn, *exec.Cmd, error) {
	ours, theirs, err := socketPair()
	if err != nil {
		return nil, nil, err
	}
	hc, err := newHandoverConn(ours)
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	inv, files, err := k.inventory()
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		hc.Close()
		theirs.Close()
		return nil, nil, err
	}
	// The child's descriptors: 3 is the handover socket, then the
	// inventory's, in order.
	cmd := exec.Command(k.exe, k.args...)
	cmd.Env = append(os.Environ(), upgradeEnv+"=3")
	cmd.ExtraFiles = append([]*os.File{theirs}, files...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	err = cmd.Start()
	// Passing a descriptor to a child puts it in blocking mode (os/exec
	// calls Fd), and the mode belongs to the socket, which this kernel
	// still accepts on: a blocking accept could not be interrupted by
	// Close. Put it back.
	for _, f := range files {
		if err := syscall.SetNonblock(int(f.Fd()), true); err != nil {
			k.log.Warn("upgrade: restoring non-blocking mode", "socket", f.Name(), "error", err)
		}
	}
	if err != nil {
		hc.Close()
		theirs.Close()
		return nil, nil, fmt.Errorf("start %s: %w", k.exe, err)
	}
	theirs.Close()
	// exited is closed once the new kernel is reaped, with waitErr set:
	// closed rather than sent on, so that fail can wait for it after the
	// select below has already seen it.
	exited := make(chan struct{})
	var waitErr error
	fail := func(err error) (*handoverConn, *exec.Cmd, error) {
		_ = cmd.Process.Kill()
		hc.Close()
		<-exited
		return nil, nil, err
	}
	// Reaps the new kernel should it die before this one exits.
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	if err := hc.send(frame{Kind: "inventory", Inventory: inv}); err != nil {
		return fail(fmt.Errorf("sending the inventory: %w", err))
	}
	type reply struct {
		f   frame
		err error
	}
	replies := make(chan reply, 1)
	go func() {
		f, fs, err := hc.recv()
		for _, f := range fs {
			f.Close()
		}
		replies <- reply{f, err}
	}()
	timeout := k.Config().Upgrade.Timeout.D()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-replies:
		switch {
		case r.err != nil:
			return fail(fmt.Errorf("the new kernel (pid %d) went away before it was ready: %v", cmd.Process.Pid, r.err))
		case r.f.Kind == "error":
			return fail(fmt.Errorf("the new kernel (pid %d) could not start: %s", cmd.Process.Pid, r.f.Error))
		case r.f.Kind != "ready":
			return fail(fmt.Errorf("the new kernel sent %q, want ready", r.f.Kind))
		}
	case <-exited:
		return fail(fmt.Errorf("the new kernel (pid %d) exited before it was ready: %v", cmd.Process.Pid, waitErr))
	case <-t.C:
		return fail(fmt.Errorf("the new kernel (pid %d) was not ready within %v", cmd.Process.Pid, timeout))
	case <-ctx.Done():
		return fail(context.Cause(ctx))
	}
	return hc, cmd, nil
}

// inventory lists the sockets to hand over, with duplicates of their
// descriptors in the order the child will find them (from 4 on).
func (k *Kernel) inventory() (*inventory, []*os.File, error) {
	inv := &inventory{From: os.Getpid(), ConnIDs: k.connIDs.Load()}
	var files []*os.File
	fd := func(f *os.File) int {
		files = append(files, f)
		return 3 + len(files)
	}
	k.mu.Lock()
	ls := maps.Clone(k.listeners)
	k.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(ls)) {
		l := ls[name]
		stream, packet, err := l.sock.files()
		if err != nil {
			return nil, files, err
		}
		is := inheritedSocket{Name: name, Network: socketNetwork(l.cfg.Load()), Address: l.sock.ln.Addr().String(), FD: fd(stream)}
		if packet != nil {
			is.PacketFD = fd(packet)
		}
		inv.Listeners = append(inv.Listeners, is)
	}
	if f, ok := k.adminLn.(interface{ File() (*os.File, error) }); ok {
		af, err := f.File()
		if err != nil {
			return nil, files, fmt.Errorf("admin socket: %w", err)
		}
		inv.AdminFD = fd(af)
	}
	mf, addr, err := k.metricsFile()
	if err != nil {
		return nil, files, err
	}
	if mf != nil {
		inv.Metrics = &inheritedMetrics{Address: addr, FD: fd(mf)}
	}
	return inv, files, nil
}

// handOver stops the old kernel's service in favour of the new one's and
// sends it what it needs to carry on: timers' schedules, line sessions,
// then the store. It returns the number of sessions handed over.
func (k *Kernel) handOver(hc *handoverConn) int {
	defer hc.Close()
	ctx, cancel := context.WithTimeout(k.forceCtx, maxDrainTimeout(k))
	defer cancel()
	// Scrapes go to the new kernel (the socket is its too now).
	k.stopMetrics()
	// The sockets stay open in the new kernel: closing them here must not
	// remove their files.
	k.sockets.keepFiles()
	if ul, ok := k.adminLn.(interface{ SetUnlinkOnClose(bool) }); ok {
		ul.SetUnlinkOnClose(false)
	}
	k.mu.Lock()
	ls := k.listeners
	ts := k.timers
	slots := k.slots
	k.listeners = map[string]*listener{}
	k.timers = map[string]*timerEntry{}
	k.slots = map[string]*slot{}
	k.mu.Unlock()

	// Timers first, so no tick runs twice: the new kernel starts them
	// on the old schedule once they have stopped here.
	starts := map[string]time.Time{}
	for name, e := range ts {
		k.stopTimer(ctx, e)
		starts[name] = e.t.Stats().Start
	}
	if err := hc.send(frame{Kind: "timers", Timers: starts}); err != nil {
		k.log.Error("upgrade: sending the timers", "error", err)
	}

	// Stream and datagram front ends stop accepting and finish their
	// calls; line front ends detach their sessions, which go over one by
	// one.
	var wg sync.WaitGroup
	var sessions int
	var mu sync.Mutex
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lf, ok := l.srv.(lineFront)
			if !ok {
				// Connections the socket accepted that the front end
				// did not take yet go to the new kernel, unserved.
				if err := l.srv.Shutdown(ctx); err != nil {
					k.log.Warn("upgrade: listener shutdown cut short", "listener", l.cfg.Load().Name, "error", err)
				}
				<-l.done
				name := l.cfg.Load().Name
				for _, c := range k.sockets.releaseKeeping(l.sock) {
					k.passAccepted(hc, name, c)
				}
				return
			}
			hs, err := lf.Detach(ctx)
			if err != nil {
				k.log.Warn("upgrade: detaching line sessions", "listener", l.cfg.Load().Name, "error", err)
			}
			<-l.done
			name := l.cfg.Load().Name
			for _, c := range k.sockets.releaseKeeping(l.sock) {
				k.passAccepted(hc, name, c)
			}
			for i := range hs {
				h := &hs[i]
				err := hc.send(frame{Kind: "conn", Conn: h}, h.File)
				h.File.Close()
				if err != nil {
					k.log.Error("upgrade: a line session was not handed over", "conn", h.ID, "error", err)
					continue
				}
				mu.Lock()
				sessions++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	k.wg.Wait() // retired front ends and timers of past reloads
	for _, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop(ctx)
		}()
	}
	wg.Wait()
	if err := k.closeStore(); err != nil {
		k.log.Error("upgrade: closing the store", "error", err)
	}
	if err := hc.send(frame{Kind: "released"}); err != nil {
		k.log.Error("upgrade: telling the new kernel the store is free", "error", err)
	}
	return sessions
}

// passAccepted sends a connection a listener's socket accepted and no
// front end served to the new kernel, which serves it on that listener.
func (k *Kernel) passAccepted(hc *handoverConn, listener string, c net.Conn) {
	defer c.Close()
	fc, ok := c.(interface{ File() (*os.File, error) })
	if !ok {
		return
	}
	f, err := fc.File()
	if err != nil {
		k.log.Warn("upgrade: an accepted connection could not be handed over", "listener", listener, "error", err)
		return
	}
	defer f.Close()
	if err := hc.send(frame{Kind: "accepted", Listener: listener}, f); err != nil {
		k.log.Warn("upgrade: an accepted connection could not be handed over", "listener", listener, "error", err)
	}
}

// closeStore closes the store and releases the state directory's lock,
// once.
func (k *Kernel) closeStore() error {
	var err error
	k.storeOnce.Do(func() {
		if k.store != nil {
			err = k.store.Close()
		}
		if k.lock != nil {
			k.lock.Close()
		}
	})
	return err
}

// successor is the state of a kernel started by an upgrade, from reading
// its inventory to opening the store the old kernel released.
type successor struct {
	hc    *handoverConn
	inv   *inventory
	files map[int]*os.File // inherited descriptors by number
	store *lateStore
}

// inheritUpgrade reads the inventory a kernel started by an upgrade was
// given, or returns nil for a kernel started afresh.
func (k *Kernel) inheritUpgrade() (*successor, error) {
	v := k.getenv(upgradeEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(upgradeEnv) // plugins and later upgrades must not see it
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", upgradeEnv, v)
	}
	hc, err := newHandoverConn(os.NewFile(uintptr(fd), "handover"))
	if err != nil {
		return nil, fmt.Errorf("handover socket: %w", err)
	}
	f, _, err := hc.recv()
	if err != nil || f.Kind != "inventory" || f.Inventory == nil {
		hc.Close()
		return nil, fmt.Errorf("reading the upgrade inventory: %v (got %q)", err, f.Kind)
	}
	su := &successor{hc: hc, inv: f.Inventory, files: map[int]*os.File{}, store: newLateStore()}
	take := func(n int) {
		if n >= 3 {
			syscall.CloseOnExec(n)
			su.files[n] = os.NewFile(uintptr(n), "inherited-"+strconv.Itoa(n))
		}
	}
	for _, l := range su.inv.Listeners {
		take(l.FD)
		take(l.PacketFD)
	}
	take(su.inv.AdminFD)
	if su.inv.Metrics != nil {
		take(su.inv.Metrics.FD)
	}
	return su, nil
}

// fail tells the old kernel this one gives up, before it is ready.
func (su *successor) fail(err error) {
	_ = su.hc.send(frame{Kind: "error", Error: err.Error()})
	su.hc.Close()
}

// socket returns the inherited socket of listener name for network, or nil.
func (su *successor) socket(name, network string) (net.Listener, net.PacketConn, string, error) {
	if su == nil {
		return nil, nil, "", nil
	}
	for _, l := range su.inv.Listeners {
		if l.Name != name || l.Network != network {
			continue
		}
		f := su.files[l.FD]
		delete(su.files, l.FD)
		if f == nil {
			return nil, nil, "", nil
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, nil, "", fmt.Errorf("inherited socket of listener %q: %w", name, err)
		}
		var pc net.PacketConn
		if l.PacketFD != 0 {
			pf := su.files[l.PacketFD]
			delete(su.files, l.PacketFD)
			if pf != nil {
				pc, err = net.FilePacketConn(pf)
				pf.Close()
				if err != nil {
					ln.Close()
					return nil, nil, "", fmt.Errorf("inherited UDP socket of listener %q: %w", name, err)
				}
			}
		}
		return ln, pc, l.Address, nil
	}
	return nil, nil, "", nil
}

// adminFile returns the inherited admin socket, or nil (also for a kernel
// started afresh, whose su is nil).
func (su *successor) adminFile() *os.File {
	if su == nil {
		return nil
	}
	f := su.files[su.inv.AdminFD]
	delete(su.files, su.inv.AdminFD)
	return f
}

// closeRest closes inherited descriptors no listener took (a listener the
// new configuration dropped).
func (su *successor) closeRest() {
	for n, f := range su.files {
		f.Close()
		delete(su.files, n)
	}
}

// carryOn runs in a kernel started by an upgrade once it is ready: it tells
// the old kernel, takes over its timers and sessions, and opens the store
// when the old kernel releases it (or dies). The store is opened in any
// case, retrying the state directory's lock, so the kernel ends up whole
// whatever the old one does.
func (k *Kernel) carryOn(ctx context.Context, su *successor) {
	defer su.hc.Close()
	if err := su.hc.send(frame{Kind: "ready", PID: os.Getpid()}); err != nil {
		k.log.Error("upgrade: telling the old kernel we are ready", "error", err)
	}
	timersStarted := false
	startTimers := func(starts map[string]time.Time) {
		if timersStarted {
			return
		}
		timersStarted = true
		k.startTimers(starts)
	}
	adopted := 0
	for done := false; !done; {
		f, files, err := su.hc.recv()
		if err != nil {
			k.log.Warn("upgrade: the old kernel went away before releasing the store", "error", err)
			break
		}
		switch f.Kind {
		case "timers":
			startTimers(f.Timers)
		case "conn":
			if len(files) != 1 || f.Conn == nil {
				k.log.Error("upgrade: a session arrived without its socket", "descriptors", len(files))
				for _, f := range files {
					f.Close()
				}
				continue
			}
			f.Conn.File = files[0]
			if k.adopt(*f.Conn) {
				adopted++
			}
		case "accepted":
			k.injectAccepted(f.Listener, files)
		case "released":
			done = true
		default:
			k.log.Warn("upgrade: unexpected frame from the old kernel", "kind", f.Kind)
		}
	}
	startTimers(nil)
	if err := k.openStore(ctx, su.store); err != nil {
		k.log.Error("upgrade: the store could not be opened", "error", err)
		return
	}
	k.gcHold.Store(false)
	k.gcSnapshots()
	if _, err := k.sd().Notify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())); err != nil {
		k.log.Warn("systemd notify", "error", err)
	}
	k.log.Info("upgrade: took over", "from_pid", su.inv.From, "sessions", adopted)
}

// injectAccepted serves connections the old kernel's socket had accepted
// on listener as if this kernel's socket had.
func (k *Kernel) injectAccepted(listener string, files []*os.File) {
	k.mu.Lock()
	l := k.listeners[listener]
	k.mu.Unlock()
	for _, f := range files {
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			k.log.Warn("upgrade: an accepted connection", "listener", listener, "error", err)
			continue
		}
		if l == nil {
			c.Close()
			continue
		}
		l.sock.inject(c)
	}
}

// adopt resumes a handed-over line session on the listener of its name.
func (k *Kernel) adopt(h line.Handover) bool {
	k.mu.Lock()
	l := k.listeners[h.Listener]
	k.mu.Unlock()
	var lf lineFront
	ok := l != nil
	if ok {
		lf, ok = l.srv.(lineFront)
	}
	if !ok {
		k.log.Warn("upgrade: a session's listener is gone from the configuration; closing it", "listener", h.Listener, "conn", h.ID)
		h.File.Close()
		return false
	}
	if err := lf.Adopt(h); err != nil {
		k.log.Error("upgrade: adopting a session", "listener", h.Listener, "conn", h.ID, "error", err)
		return false
	}
	return true
}

// openStore takes the state directory's lock, retrying while the old
// kernel still holds it, and opens the store into ls.
func (k *Kernel) openStore(ctx context.Context, ls *lateStore) error {
	for {
		lock, err := lockStateDir(k.stateDir)
		if err == nil {
			st, err := state.Open(filepath.Join(k.stateDir, "store.db"), nil)
			if err != nil {
				lock.Close()
				ls.Close()
				return err
			}
			k.lockMu.Lock()
			k.lock = lock
			k.lockMu.Unlock()
			ls.set(st)
			return nil
		}
		select {
		case <-ctx.Done():
			ls.Close()
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
