// Package gctune caps how often a process with a small heap collects
// garbage, within a memory floor.
//
// switchyard's kernel and its plugins hold small heaps (a few MiB) and
// allocate per request, so with the default GOGC=100 they collect each time
// that small heap doubles: dozens of times a second under load, each cycle
// costing a fixed amount of CPU whatever the heap. After each cycle the tuner
// looks at the live heap and the allocation rate since the cycle before, and
// sets the GC percentage so that the heap may grow by what about a quarter of
// a second allocates — never past the floor, never below GOGC=100. Under load
// that removes most cycles for at most the floor's worth of memory; at rest
// (the runtime still collects every two minutes) the rate is low, GOGC=100
// applies again and the memory goes back to the system (a look once a second
// notices the rate falling between cycles). Once the live heap is half
// the floor, GOGC=100 applies whatever the rate. This is the heap "ballast"
// of Twitch and the GC tuners of Uber and ByteDance, bounded by the
// allocation rate.
//
// An operator's GOGC in the environment wins: Start then does nothing.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// basePercent is Go's default GC percentage, the tuner's least.
	basePercent = 100
	// maxPercent bounds the percentage for a nearly empty heap.
	maxPercent = 5000
	// heapMinimum is the Go runtime's floor for the heap target at
	// GOGC=100; the runtime scales it with the percentage
	// (runtime/mgcpacer.go).
	heapMinimum = 4 << 20
	// cyclesPerSecond is how many cycles a second the tuner aims at, at
	// most, while the heap target stays under the floor.
	cyclesPerSecond = 4
	// idleLook is how often the tuner looks between cycles, so that a
	// process that went quiet gets GOGC=100 back without waiting for the
	// runtime's two-minute forced cycle.
	idleLook = time.Second
)

// Percent is the GC percentage for a live heap of live bytes that grows by
// rate bytes a second: the heap may grow by rate/cyclesPerSecond before the
// next cycle. The target stays at most floor — both live × (1+p/100) and the
// runtime's minimum target, which scales with p — and p between 100 and
// maxPercent. Without a live heap measured yet, it is 100.
func Percent(live, rate, floor uint64) int {
	if live == 0 || live*2 >= floor {
		return basePercent
	}
	p := rate / cyclesPerSecond * 100 / live
	p = min(p, floor*100/heapMinimum, floor*100/live-100, maxPercent)
	return int(max(p, basePercent))
}

var (
	mu      sync.Mutex
	running *tuner
)

// tuner re-arms a finalizer on a sentinel object, which runs after every GC
// cycle, and sets the percentage for what that cycle found.
type tuner struct {
	floor   uint64
	stopped atomic.Bool
	done    chan struct{} // closed by stop: ends the idle looks

	// Guarded by mu.
	last   int // the percentage set last
	sample []metrics.Sample
	allocs uint64    // bytes allocated in all, at the last look
	at     time.Time // when that was
}

type sentinel struct{ t *tuner }

// Start tunes the process's GC percentage with a heap floor of floor bytes
// until the returned function stops it (restoring GOGC=100). With GOGC set
// in the environment, or a floor of 0, it does nothing. A second Start
// replaces the first.
func Start(floor uint64) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set || floor == 0 {
		return func() {}
	}
	t := &tuner{floor: floor, done: make(chan struct{}), sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}}
	mu.Lock()
	if running != nil {
		running.stop()
	}
	running = t
	t.look()
	mu.Unlock()
	arm(t)
	idled := make(chan struct{})
	go func() {
		defer close(idled)
		t.idle()
	}()
	return func() {
		mu.Lock()
		if running == t {
			running = nil
			t.stop()
			debug.SetGCPercent(basePercent)
		}
		mu.Unlock()
		<-idled
	}
}

// stop ends t's looks; the caller holds mu.
func (t *tuner) stop() {
	if !t.stopped.Swap(true) {
		close(t.done)
	}
}

// idle looks once every idleLook until t is stopped.
func (t *tuner) idle() {
	tick := time.NewTicker(idleLook)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			if was, now := t.tune(); was > basePercent && now == basePercent {
				// Gone quiet: collect down to GOGC=100's heap and give
				// the rest back now, as an operator looking at the
				// RSS of an idle daemon expects.
				debug.FreeOSMemory()
			}
		}
	}
}

func arm(t *tuner) {
	runtime.SetFinalizer(&sentinel{t: t}, cycle)
}

// cycle runs on the finalizer goroutine once a GC cycle has found the
// sentinel unreachable: it tunes, and arms a fresh sentinel for the next
// cycle.
func cycle(s *sentinel) {
	t := s.t
	if t.stopped.Load() {
		return
	}
	_, _ = t.tune()
	arm(t)
}

// tune sets the percentage for what a look finds, and returns the one in
// force before and after.
func (t *tuner) tune() (was, now int) {
	mu.Lock()
	defer mu.Unlock()
	was = t.last
	if t.stopped.Load() { // set under mu whenever t stops being the running tuner
		return was, was
	}
	live, rate := t.look()
	t.setLocked(Percent(live, rate, t.floor))
	return was, t.last
}

// look returns the live heap the last cycle marked and the allocation rate
// since the previous look. The caller holds mu.
func (t *tuner) look() (live, rate uint64) {
	metrics.Read(t.sample)
	now := time.Now()
	live = uint64Of(t.sample[0])
	allocs := uint64Of(t.sample[1])
	if dt := now.Sub(t.at).Seconds(); !t.at.IsZero() && dt > 0 && allocs >= t.allocs {
		rate = uint64(float64(allocs-t.allocs) / dt)
	}
	t.allocs, t.at = allocs, now
	return live, rate
}

func uint64Of(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

// setLocked applies p; a change of less than a tenth is not worth the
// pacer's recomputation. The caller holds mu and has checked that t runs.
func (t *tuner) setLocked(p int) {
	if t.last != 0 && p*10 > t.last*9 && p*10 < t.last*11 {
		return
	}
	debug.SetGCPercent(p)
	t.last = p
}
