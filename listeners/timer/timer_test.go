package timer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// fakeClock is a clock that moves only when the test says, and a
// Dispatcher that records ticks and can hold one back.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	return ch
}

// advance moves the clock and wakes the waiters that are due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

type recorder struct {
	clock *fakeClock
	ticks chan Tick
	hold  chan struct{} // when set, a tick waits for it (or ctx)
	fail  bool
}

func (r *recorder) DispatchTick(ctx context.Context, t Tick) error {
	r.ticks <- t
	if r.hold != nil {
		select {
		case <-r.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.fail {
		return errors.New("plugin said no")
	}
	return nil
}

// waitFor waits until the timer sleeps on the clock (so advance wakes it).
func waitFor(t *testing.T, c *fakeClock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the timer never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func recv(t *testing.T, ch <-chan Tick) Tick {
	t.Helper()
	select {
	case tk := <-ch:
		return tk
	case <-time.After(5 * time.Second):
		t.Fatal("no tick")
	}
	return Tick{}
}

func newTest(t *testing.T, r *recorder, start time.Time) *Timer {
	tm := New(Config{Name: "beat", Every: time.Minute, Start: start, Now: r.clock.Now, After: r.clock.After}, r)
	go tm.Run()
	t.Cleanup(func() {
		if r.hold != nil {
			close(r.hold)
		}
		if err := tm.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return tm
}

func TestSchedule(t *testing.T) {
	testutil.CheckGoroutines(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &recorder{clock: &fakeClock{now: t0}, ticks: make(chan Tick, 10)}
	tm := newTest(t, r, time.Time{})
	for i := 1; i <= 3; i++ {
		waitFor(t, r.clock)
		r.clock.advance(time.Minute)
		tk := recv(t, r.ticks)
		if want := t0.Add(time.Duration(i) * time.Minute); tk.Count != uint64(i) || !tk.Scheduled.Equal(want) || tk.Skipped != 0 {
			t.Fatalf("tick %d = %+v, want count %d at %v", i, tk, i, want)
		}
	}
	waitFor(t, r.clock)
	st := tm.Stats()
	if st.Ticks != 3 || st.Skipped != 0 || !st.Next.Equal(t0.Add(4*time.Minute)) || !st.Start.Equal(t0) {
		t.Fatalf("stats %+v", st)
	}
}

// TestSkip: ticks that fall due while one runs are skipped and counted; the
// next tick keeps to the schedule and says how many were skipped.
func TestSkip(t *testing.T) {
	testutil.CheckGoroutines(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &recorder{clock: &fakeClock{now: t0}, ticks: make(chan Tick, 10), hold: make(chan struct{})}
	tm := newTest(t, r, time.Time{})
	waitFor(t, r.clock)
	r.clock.advance(time.Minute)
	recv(t, r.ticks) // tick 1 runs, and is held
	if !tm.Stats().Running {
		t.Fatal("not running while a tick is held")
	}
	r.clock.advance(2*time.Minute + 30*time.Second) // ticks 2 and 3 fall due
	r.hold <- struct{}{}                            // tick 1 ends at 3m30s
	waitFor(t, r.clock)
	r.clock.advance(30 * time.Second)
	tk := recv(t, r.ticks)
	if tk.Count != 4 || tk.Skipped != 2 || !tk.Scheduled.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("after the slow tick: %+v, want count 4, skipped 2, at 4m", tk)
	}
	r.hold <- struct{}{}
	waitFor(t, r.clock)
	if st := tm.Stats(); st.Skipped != 2 || st.Ticks != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestResume: a schedule whose start lies in the past resumes at the next
// tick due, numbered as if it had run all along.
func TestResume(t *testing.T) {
	testutil.CheckGoroutines(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &recorder{clock: &fakeClock{now: t0.Add(10*time.Minute + 20*time.Second)}, ticks: make(chan Tick, 10)}
	newTest(t, r, t0)
	waitFor(t, r.clock)
	r.clock.advance(40 * time.Second)
	if tk := recv(t, r.ticks); tk.Count != 11 || tk.Skipped != 0 || !tk.Scheduled.Equal(t0.Add(11*time.Minute)) {
		t.Fatalf("resumed tick %+v, want count 11 at 11m", tk)
	}
}

func TestErrorsAndPanics(t *testing.T) {
	testutil.CheckGoroutines(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &recorder{clock: &fakeClock{now: t0}, ticks: make(chan Tick, 10), fail: true}
	tm := newTest(t, r, time.Time{})
	waitFor(t, r.clock)
	r.clock.advance(time.Minute)
	recv(t, r.ticks)
	waitFor(t, r.clock)
	if st := tm.Stats(); st.Errors != 1 || st.LastError != "plugin said no" {
		t.Fatalf("stats %+v", st)
	}

	p := New(Config{Name: "p", Every: time.Minute, Now: r.clock.Now, After: r.clock.After}, panicker{})
	go p.Run()
	defer p.Stop(context.Background())
	waitFor(t, r.clock)
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Errors == 0 {
		r.clock.advance(time.Minute)
		if time.Now().After(deadline) {
			t.Fatal("the panicking tick was never counted")
		}
		time.Sleep(time.Millisecond)
	}
}

type panicker struct{}

func (panicker) DispatchTick(context.Context, Tick) error { panic("boom") }

// TestStop: Stop lets a running tick finish within its grace and cancels
// it after.
func TestStop(t *testing.T) {
	testutil.CheckGoroutines(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &recorder{clock: &fakeClock{now: t0}, ticks: make(chan Tick, 10), hold: make(chan struct{})}
	tm := New(Config{Name: "beat", Every: time.Minute, Now: r.clock.Now, After: r.clock.After}, r)
	go tm.Run()
	waitFor(t, r.clock)
	r.clock.advance(time.Minute)
	recv(t, r.ticks)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tm.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop of a held tick: %v, want the deadline", err)
	}
	if st := tm.Stats(); st.Errors != 1 || st.Running {
		t.Fatalf("the cancelled tick: %+v", st)
	}

	// Stop while it waits for the next tick returns at once.
	idle := New(Config{Name: "idle", Every: time.Hour}, r)
	go idle.Run()
	if err := idle.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
