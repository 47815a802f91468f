package kernel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/switchyard-dev/switchyard/kernel/config"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// ErrShuttingDown is returned for work asked of a kernel that is stopping.
var ErrShuttingDown = errors.New("kernel: shutting down")

// ReloadSummary is what a configuration reload changed.
type ReloadSummary struct {
	Config            string   `json:"config"`
	PluginsStarted    []string `json:"plugins_started"`
	PluginsSwapped    []string `json:"plugins_swapped"`
	PluginsStopped    []string `json:"plugins_stopped"`
	ListenersAdded    []string `json:"listeners_added"`
	ListenersReplaced []string `json:"listeners_replaced"`
	ListenersRemoved  []string `json:"listeners_removed"`
	ListenersKept     []string `json:"listeners_kept"`
	TimersStarted     []string `json:"timers_started"`
	TimersStopped     []string `json:"timers_stopped"`
	TimersKept        []string `json:"timers_kept"`
	Metrics           string   `json:"metrics,omitempty"` // how the metrics server changed
}

// ReloadConfig re-reads the configuration and reconciles the running kernel
// with it, make-before-break: new plugins are started, changed plugins get a
// new process, new addresses are bound; only when all of that succeeded does
// traffic move. Listeners whose address did not change keep their socket;
// a listener whose other settings changed gets a new front end on the same
// socket while the old one finishes its requests. A configuration that does
// not parse or validate, or a start or bind that fails, changes nothing.
func (k *Kernel) ReloadConfig(ctx context.Context) (*ReloadSummary, error) {
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()
	k.bgMu.Lock()
	closing := k.closing
	k.bgMu.Unlock()
	if closing || k.ctx == nil || k.ctx.Err() != nil {
		return nil, ErrShuttingDown
	}
	// A shutdown that begins meanwhile aborts the starts under way.
	ctx, cancel := mergeCancel(ctx, k.ctx)
	defer cancel()
	if _, err := k.sd().Reloading(); err != nil {
		k.log.Warn("systemd notify", "error", err)
	}
	defer func() {
		if _, err := k.sd().Ready(); err != nil {
			k.log.Warn("systemd notify", "error", err)
		}
	}()
	next, err := k.loadConfig()
	if err != nil {
		return nil, err
	}
	stateDir, adminPath, err := k.paths(next)
	if err != nil {
		return nil, err
	}
	if next.Privileges != k.Config().Privileges {
		return nil, fmt.Errorf("privileges cannot change while the kernel runs (%+v → %+v); restart it", k.Config().Privileges, next.Privileges)
	}
	if stateDir != k.stateDir {
		return nil, fmt.Errorf("state.dir cannot change while the kernel runs (%s → %s); restart it", k.stateDir, stateDir)
	}
	if adminPath != k.adminPath {
		return nil, fmt.Errorf("admin.socket cannot change while the kernel runs (%s → %s); restart it", k.adminPath, adminPath)
	}

	k.mu.Lock()
	slots := maps.Clone(k.slots)
	listeners := maps.Clone(k.listeners)
	k.mu.Unlock()

	sum := &ReloadSummary{Config: next.Source}
	p := &reloadPlan{k: k}
	defer p.rollback() // only releases references once committed

	// Prepare: everything that can fail, without touching traffic.
	for _, name := range slices.Sorted(maps.Keys(next.Plugins)) {
		pc := next.Plugins[name]
		routed := routedListeners(next, name)
		old, ok := slots[name]
		if !ok {
			s := newSlot(k, pc)
			s.setConfig(pc, routed)
			// Staged slots keep their snapshots from garbage collection
			// until they join k.slots.
			p.stage(s)
			if _, err := s.swap(ctx, true, "config reload"); err != nil {
				return nil, fmt.Errorf("plugin %q: %w", name, err)
			}
			sum.PluginsStarted = append(sum.PluginsStarted, name)
			continue
		}
		oc, _ := old.config()
		if oc.SameProcess(pc) && old.serves(routed) {
			p.kept = append(p.kept, keptSlot{s: old, cfg: pc, listeners: routed})
			continue
		}
		// A new process for a changed plugin. It is prepared without the
		// slot's swapMu, so a crash restart meanwhile is not held up; the
		// commit takes it.
		b, release, err := k.snapshot(pc.Path)
		if err != nil {
			old.swapFails.Add(1)
			return nil, fmt.Errorf("plugin %q: %w", name, err)
		}
		p.releases = append(p.releases, release)
		old.mu.Lock()
		gen := old.generation + 1
		old.mu.Unlock()
		in, err := old.prepare(ctx, pc, routed, b, gen)
		if err != nil {
			old.swapFails.Add(1)
			return nil, fmt.Errorf("plugin %q: %w", name, err)
		}
		p.swaps = append(p.swaps, swapPlan{s: old, cfg: pc, listeners: routed, in: in})
		sum.PluginsSwapped = append(sum.PluginsSwapped, name)
	}
	for _, lc := range next.Listeners {
		old, ok := listeners[lc.Name]
		if ok && sameFront(old.cfg.Load(), lc) {
			continue
		}
		var sock *socket
		if ok && socketNetwork(old.cfg.Load()) == socketNetwork(lc) && old.cfg.Load().SocketAddress() == lc.SocketAddress() {
			// Same address, other settings: a new front end on the same
			// socket (even a port-0 one).
			sock = old.sock
			k.sockets.ref(sock)
		} else if sock, err = k.sockets.acquire(socketNetwork(lc), lc.SocketAddress()); err != nil {
			return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
		}
		p.socks = append(p.socks, sock)
		p.fronts = append(p.fronts, frontPlan{cfg: lc, sock: sock, old: old})
	}

	metrics, err := k.prepareMetrics(next.Metrics.Address)
	if err != nil {
		return nil, err
	}
	defer metrics.abort()

	// Commit: nothing below fails.
	p.committed = true
	sum.Metrics = metrics.commit()
	for _, sp := range p.swaps {
		sp.s.swapMu.Lock()
		sp.s.mu.Lock()
		if next := sp.s.generation + 1; next != sp.in.gen {
			// A restart or a swap committed while this one was prepared;
			// this one comes after it.
			k.log.Warn("plugin generation moved during the reload", "plugin", sp.s.name,
				"prepared_as", sp.in.gen, "serves_as", next)
			sp.in.gen = next
		}
		sp.s.mu.Unlock()
		sp.s.setConfig(sp.cfg, sp.listeners)
		sp.s.commit(sp.in, commitSwap)
		sp.s.swapMu.Unlock()
	}
	for _, ks := range p.kept {
		ks.s.setConfig(ks.cfg, ks.listeners)
	}
	nextSlots := make(map[string]*slot)
	for _, s := range slices.Concat(p.started, keptSlots(p.kept), swappedSlots(p.swaps)) {
		nextSlots[s.name] = s
	}
	for _, s := range p.started {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.runKicks()
		}()
	}
	k.mu.Lock()
	k.slots = nextSlots
	k.staged = nil
	k.cfg = next
	k.mu.Unlock()

	replaced := make(map[string]bool)
	for _, fp := range p.fronts {
		k.startListener(fp.cfg, fp.sock, nextSlots[fp.cfg.Plugin])
		if fp.old != nil {
			replaced[fp.cfg.Name] = true
			sum.ListenersReplaced = append(sum.ListenersReplaced, fp.cfg.Name)
			// Its requests in flight finish on the plugin the new
			// configuration names, which is running; its old plugin may be
			// stopping.
			fp.old.route.slot.Store(nextSlots[fp.cfg.Plugin])
			k.retireListener(fp.old)
		} else {
			sum.ListenersAdded = append(sum.ListenersAdded, fp.cfg.Name)
		}
	}
	names := make(map[string]bool)
	for _, lc := range next.Listeners {
		names[lc.Name] = true
		if old, ok := listeners[lc.Name]; ok && !replaced[lc.Name] {
			old.cfg.Store(lc)
			if lf, ok := old.srv.(lineFront); ok {
				// Live sessions keep their connections under the new limits.
				lf.SetLimits(lineLimits(lc))
			}
			old.route.slot.Store(nextSlots[lc.Plugin])
			sum.ListenersKept = append(sum.ListenersKept, lc.Name)
		}
	}
	for name, old := range listeners {
		if !names[name] {
			k.mu.Lock()
			delete(k.listeners, name)
			k.mu.Unlock()
			sum.ListenersRemoved = append(sum.ListenersRemoved, name)
			k.retireListener(old)
		}
	}
	k.reconcileTimers(next, nextSlots, sum)
	for name, s := range slots {
		if _, ok := nextSlots[name]; !ok {
			sum.PluginsStopped = append(sum.PluginsStopped, name)
			k.spawn(func() { s.stop(k.forceCtx) })
		}
	}
	k.watcher.set(slices.Collect(maps.Values(nextSlots)))
	k.log.Info("configuration reloaded", "config", next.Source,
		"plugins_started", sum.PluginsStarted, "plugins_swapped", sum.PluginsSwapped, "plugins_stopped", sum.PluginsStopped,
		"listeners_added", sum.ListenersAdded, "listeners_replaced", sum.ListenersReplaced, "listeners_removed", sum.ListenersRemoved,
		"timers_started", sum.TimersStarted, "timers_stopped", sum.TimersStopped)
	return sum, nil
}

// reconcileTimers matches the running timers to next: a timer whose period
// is unchanged keeps its schedule (its plugin may change), others are
// started anew, and removed ones stopped once their tick in progress ends.
func (k *Kernel) reconcileTimers(next *config.Config, slots map[string]*slot, sum *ReloadSummary) {
	k.mu.Lock()
	old := maps.Clone(k.timers)
	k.mu.Unlock()
	names := make(map[string]bool)
	for _, tc := range next.Timers {
		names[tc.Name] = true
		if e, ok := old[tc.Name]; ok && e.cfg.Load().Every == tc.Every {
			e.cfg.Store(tc)
			e.slot.Store(slots[tc.Plugin])
			sum.TimersKept = append(sum.TimersKept, tc.Name)
			continue
		} else if ok {
			sum.TimersStopped = append(sum.TimersStopped, tc.Name)
			k.retireTimer(e)
		}
		k.startTimer(tc, slots[tc.Plugin])
		sum.TimersStarted = append(sum.TimersStarted, tc.Name)
	}
	for name, e := range old {
		if !names[name] {
			k.mu.Lock()
			delete(k.timers, name)
			k.mu.Unlock()
			sum.TimersStopped = append(sum.TimersStopped, name)
			k.retireTimer(e)
		}
	}
}

// retireTimer stops a timer in the background, letting its tick in
// progress finish (up to the longest drain timeout).
func (k *Kernel) retireTimer(e *timerEntry) {
	k.retire(func(ctx context.Context) { k.stopTimer(ctx, e) })
}

// retireListener shuts an old front end down in the background, letting
// its requests finish (up to the longest drain timeout), and releases its
// socket reference.
func (k *Kernel) retireListener(l *listener) {
	k.retire(func(ctx context.Context) { k.stopListener(ctx, l) })
}

// retire runs stop in the background, with a context that ends after the
// longest drain timeout or when shutdown stops waiting; once shutdown has
// begun, it runs stop itself (not reached: reloads end before it).
func (k *Kernel) retire(stop func(context.Context)) {
	run := func() {
		ctx, cancel := context.WithTimeout(k.forceCtx, maxDrainTimeout(k))
		defer cancel()
		stop(ctx)
	}
	if !k.spawn(run) {
		run()
	}
}

func maxDrainTimeout(k *Kernel) (d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, pc := range k.cfg.Plugins {
		d = max(d, pc.DrainTimeout.D())
	}
	return d
}

// serves reports whether the slot's running version serves every protocol
// the listeners need; when it does not (a listener of a new protocol now
// routes here), the reload starts a new process, whose Describe decides.
func (s *slot) serves(listeners []*proto.Listener) bool {
	s.mu.Lock()
	cur := s.current
	s.mu.Unlock()
	if cur == nil {
		return true // not running now; its next start checks
	}
	for _, l := range listeners {
		if !serves(cur.protocols, l.GetProtocol()) {
			return false
		}
	}
	return true
}

// sameFront reports whether a listener's front end can stay as it is: only
// its plugin differs, which its route changes atomically, or, for a line
// listener, its limits, which apply to its live sessions in place.
func sameFront(a, b *config.Listener) bool {
	if a.Protocol == "line" && b.Protocol == "line" {
		return a.Address == b.Address
	}
	return a.Protocol == b.Protocol &&
		a.Address == b.Address &&
		a.MaxBody == b.MaxBody &&
		a.MaxHeaderBytes == b.MaxHeaderBytes &&
		a.ReadHeaderTimeout == b.ReadHeaderTimeout &&
		a.ReadTimeout == b.ReadTimeout &&
		a.IdleTimeout == b.IdleTimeout &&
		a.WriteTimeout == b.WriteTimeout &&
		a.MaxConnections == b.MaxConnections &&
		a.MaxInflight == b.MaxInflight &&
		a.Timeout == b.Timeout &&
		a.MaxLine == b.MaxLine &&
		a.Telnet == b.Telnet &&
		a.UTF8Enabled() == b.UTF8Enabled()
}

type reloadPlan struct {
	k         *Kernel
	committed bool
	started   []*slot     // new slots, staged in k.staged until commit
	kept      []keptSlot  // slots whose process stays
	swaps     []swapPlan  // slots with a new process prepared
	socks     []*socket   // sockets acquired for new front ends
	fronts    []frontPlan // front ends to start
	releases  []func()    // snapshot references to drop when done
}

// stage records a new slot, which snapshot garbage collection must respect
// before it joins k.slots.
func (p *reloadPlan) stage(s *slot) {
	p.started = append(p.started, s)
	p.k.mu.Lock()
	p.k.staged = append(p.k.staged, s)
	p.k.mu.Unlock()
}

type keptSlot struct {
	s         *slot
	cfg       *config.Plugin
	listeners []*proto.Listener
}

type swapPlan struct {
	s         *slot
	cfg       *config.Plugin
	listeners []*proto.Listener
	in        *instance
}

type frontPlan struct {
	cfg  *config.Listener
	sock *socket
	old  *listener
}

func keptSlots(ks []keptSlot) []*slot {
	out := make([]*slot, len(ks))
	for i, k := range ks {
		out[i] = k.s
	}
	return out
}

func swappedSlots(sp []swapPlan) []*slot {
	out := make([]*slot, len(sp))
	for i, p := range sp {
		out[i] = p.s
	}
	return out
}

// rollback releases the plan's snapshot references and undoes a plan that
// did not commit: prepared processes are stopped, new slots stopped, new
// sockets released.
func (p *reloadPlan) rollback() {
	for _, release := range p.releases {
		release()
	}
	if p.committed {
		return
	}
	for _, sp := range p.swaps {
		sp.in.proc.Kill()
	}
	for _, s := range p.started {
		s.stop(p.k.forceCtx)
	}
	p.k.mu.Lock()
	p.k.staged = nil
	p.k.mu.Unlock()
	for _, sock := range p.socks {
		p.k.sockets.release(sock)
	}
}
