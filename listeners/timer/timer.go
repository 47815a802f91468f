package timer

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// Dispatcher runs ticks. Implementations are safe for concurrent use (each
// Timer calls it from its own goroutine).
type Dispatcher interface {
	// DispatchTick runs t and returns once it is done. ctx ends when the
	// timer is stopped and its grace has passed.
	DispatchTick(ctx context.Context, t Tick) error
}

// Tick is one due run of a timer.
type Tick struct {
	Name      string
	Scheduled time.Time // when it was due
	Count     uint64    // numbers the ticks from 1, skipped ones included
	Skipped   uint64    // ticks skipped so far
}

// Config configures a Timer.
type Config struct {
	Name  string
	Every time.Duration // must be positive
	// Start fixes the schedule: tick n is due at Start + n*Every. The zero
	// value means the time Run starts. A kernel that hands its timers to
	// its successor passes the old start, so the schedule carries on.
	Start  time.Time
	Logger *slog.Logger // nil = slog.Default()
	// Now and After replace the clock in tests; nil means the real one.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// Stats are a Timer's counters.
type Stats struct {
	Name      string    `json:"name"`
	Every     string    `json:"every"`
	Ticks     uint64    `json:"ticks"`   // runs completed, failed or not
	Skipped   uint64    `json:"skipped"` // due while the previous tick still ran
	Errors    uint64    `json:"errors"`
	Running   bool      `json:"running"`
	Last      time.Time `json:"last"` // when the last run was due; zero before any
	Next      time.Time `json:"next"`
	LastError string    `json:"last_error"`
	Start     time.Time `json:"start"`
}

// Timer calls a Dispatcher on a schedule. Create it with New, run it with
// Run and end it with Stop.
type Timer struct {
	name  string
	every time.Duration
	d     Dispatcher
	log   *slog.Logger
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	ctx    context.Context // the ticks'; cancelled when Stop's grace ends
	cancel context.CancelFunc
	stop   chan struct{} // closed by Stop: no more ticks
	once   sync.Once
	done   chan struct{} // closed when Run has returned

	mu    sync.Mutex
	start time.Time // guarded by mu
	stats Stats     // guarded by mu
}

// New returns a Timer that runs ticks with d.
func New(cfg Config, d Dispatcher) *Timer {
	if cfg.Every <= 0 {
		panic(fmt.Sprintf("timer %s: every must be positive, got %v", cfg.Name, cfg.Every))
	}
	t := &Timer{
		name:  cfg.Name,
		every: cfg.Every,
		d:     d,
		log:   cfg.Logger,
		now:   cfg.Now,
		after: cfg.After,
		start: cfg.Start,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.log = t.log.With("timer", cfg.Name)
	if t.now == nil {
		t.now = time.Now
	}
	if t.after == nil {
		t.after = time.After
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Run keeps the schedule until Stop; it returns once the tick in progress,
// if any, has ended. It may be called once.
func (t *Timer) Run() {
	defer close(t.done)
	defer t.cancel()
	t.mu.Lock()
	if t.start.IsZero() {
		t.start = t.now()
	}
	start := t.start
	t.stats.Start = start
	t.mu.Unlock()

	// n is the next tick's number; the first is due one period in.
	n := uint64(1)
	if now := t.now(); now.After(start) {
		// A schedule carried over from before: resume at the first tick
		// not yet due, without counting the gap as skipped.
		n = uint64(now.Sub(start)/t.every) + 1
	}
	var skipped uint64
	for {
		due := start.Add(time.Duration(n) * t.every)
		t.mu.Lock()
		t.stats.Next = due
		t.mu.Unlock()
		if wait := due.Sub(t.now()); wait > 0 {
			select {
			case <-t.after(wait):
			case <-t.stop:
				return
			}
		}
		select {
		case <-t.stop:
			return
		default:
		}
		t.run(Tick{Name: t.name, Scheduled: due, Count: n, Skipped: skipped})
		// The ticks that fell due while this one ran are skipped.
		next := uint64(t.now().Sub(start)/t.every) + 1
		if next <= n {
			next = n + 1
		}
		if miss := next - n - 1; miss > 0 {
			skipped += miss
			t.mu.Lock()
			t.stats.Skipped = skipped
			t.mu.Unlock()
			t.log.Warn("ticks skipped: the previous tick ran past them", "skipped", miss, "count", n, "every", t.every)
		}
		n = next
	}
}

// run dispatches one tick, recovering a panic of the dispatcher.
func (t *Timer) run(tk Tick) {
	t.mu.Lock()
	t.stats.Running = true
	t.stats.Last = tk.Scheduled
	t.mu.Unlock()
	err := t.dispatch(tk)
	t.mu.Lock()
	t.stats.Running = false
	t.stats.Ticks++
	if err != nil {
		t.stats.Errors++
		t.stats.LastError = err.Error()
	} else {
		t.stats.LastError = ""
	}
	t.mu.Unlock()
	if err != nil {
		t.log.Warn("tick failed", "count", tk.Count, "error", err)
	}
}

func (t *Timer) dispatch(tk Tick) (err error) {
	defer func() {
		if p := recover(); p != nil {
			t.log.Error("tick dispatcher panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("dispatcher panicked: %v", p)
		}
	}()
	return t.d.DispatchTick(t.ctx, tk)
}

// Stop ends the schedule: no tick starts after it. A tick in progress may
// finish until ctx ends, when its context is cancelled. Stop returns once
// Run has returned, with ctx's error if it had to cancel; so Run must have
// been started. Safe to call more than once.
func (t *Timer) Stop(ctx context.Context) error {
	t.once.Do(func() { close(t.stop) })
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		t.cancel()
		<-t.done
		return ctx.Err()
	}
}

// Stats returns the timer's counters.
func (t *Timer) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Name = t.name
	s.Every = t.every.String()
	s.Start = t.start
	return s
}

// Every is the timer's period.
func (t *Timer) Every() time.Duration { return t.every }
