package kernel

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/kernel/config"
	"github.com/switchyard-dev/switchyard/listeners/timer"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// timerEntry is one [[timers]] entry: its schedule and the slot it calls.
// A reload that points it at another plugin swaps the slot atomically and
// keeps the schedule; one that changes its period starts a new schedule.
type timerEntry struct {
	cfg  atomic.Pointer[config.Timer]
	slot atomic.Pointer[slot]
	t    *timer.Timer
	done chan struct{} // closed when Run has returned
}

// DispatchTick implements listeners/timer.Dispatcher.
func (e *timerEntry) DispatchTick(ctx context.Context, t timer.Tick) error {
	s := e.slot.Load()
	defer s.observe(callTick, time.Now())
	return s.tick(ctx, t)
}

// tick runs one tick in the slot's current instance.
func (s *slot) tick(ctx context.Context, t timer.Tick) error {
	cfg, _ := s.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout.D())
	defer cancel()
	err := s.withInstance(ctx, nil, func(in *instance) (bool, error) {
		return false, in.proc.Tick(ctx, &proto.Tick{
			Name:              t.Name,
			ScheduledUnixNano: t.Scheduled.UnixNano(),
			Count:             t.Count,
			Skipped:           t.Skipped,
		})
	})
	if err != nil {
		s.errs.Add(1)
		return fmt.Errorf("plugin %s: %w", s.name, err)
	}
	s.served.Add(1)
	return nil
}

// startTimer starts tc's schedule, calling s.
func (k *Kernel) startTimer(tc *config.Timer, s *slot) *timerEntry {
	return k.startTimerAt(tc, s, time.Time{})
}

// startTimerAt starts tc's schedule from start (tick n due at start +
// n*every), or from now when start is zero.
func (k *Kernel) startTimerAt(tc *config.Timer, s *slot, start time.Time) *timerEntry {
	e := &timerEntry{done: make(chan struct{})}
	e.cfg.Store(tc)
	e.slot.Store(s)
	e.t = timer.New(timer.Config{Name: tc.Name, Every: tc.Every.D(), Start: start, Logger: k.log}, e)
	go func() {
		defer close(e.done)
		e.t.Run()
	}()
	k.mu.Lock()
	k.timers[tc.Name] = e
	k.mu.Unlock()
	return e
}

// stopTimer ends e's schedule; a tick in progress may finish within ctx.
func (k *Kernel) stopTimer(ctx context.Context, e *timerEntry) {
	if err := e.t.Stop(ctx); err != nil {
		k.log.Warn("timer stop cut a tick short", "timer", e.cfg.Load().Name, "error", err)
	}
	<-e.done
}

// timerRoutes lists the timers of cfg that call plugin name, as the
// pseudo-listeners the plugin is configured with: a plugin must serve
// "timer" for them.
func timerRoutes(cfg *config.Config, name string) []*proto.Listener {
	var ls []*proto.Listener
	for _, t := range cfg.Timers {
		if t.Plugin == name {
			ls = append(ls, &proto.Listener{Name: t.Name, Protocol: "timer", Address: "every " + t.Every.D().String()})
		}
	}
	return ls
}

// TimerInfo is one row of `ctl timers`.
type TimerInfo struct {
	Name      string `json:"name"`
	Plugin    string `json:"plugin"`
	Every     string `json:"every"`
	Ticks     uint64 `json:"ticks"`
	Skipped   uint64 `json:"skipped"`
	Errors    uint64 `json:"errors"`
	Running   bool   `json:"running"`
	Last      string `json:"last"`
	Next      string `json:"next"`
	LastError string `json:"last_error"`
}

// Timers lists the timers, by name.
func (k *Kernel) Timers() []TimerInfo {
	k.mu.Lock()
	es := make([]*timerEntry, 0, len(k.timers))
	for _, e := range k.timers {
		es = append(es, e)
	}
	k.mu.Unlock()
	out := make([]TimerInfo, 0, len(es))
	for _, e := range es {
		st := e.t.Stats()
		ti := TimerInfo{
			Name:      st.Name,
			Plugin:    e.slot.Load().name,
			Every:     st.Every,
			Ticks:     st.Ticks,
			Skipped:   st.Skipped,
			Errors:    st.Errors,
			Running:   st.Running,
			LastError: st.LastError,
		}
		if !st.Last.IsZero() {
			ti.Last = st.Last.UTC().Format(time.RFC3339)
		}
		if !st.Next.IsZero() {
			ti.Next = st.Next.UTC().Format(time.RFC3339)
		}
		out = append(out, ti)
	}
	slices.SortFunc(out, func(a, b TimerInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
