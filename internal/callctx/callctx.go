// Package callctx is a context for one call, as cheap as a context with a
// deadline and a cause can be. The standard library's layers
// (WithCancelCause, then WithTimeout) take several allocations and a timer
// per call, and a child of a cancellable parent registers with it under a
// lock that every call contends for. A Ctx is one object; its deadline arms
// no timer until something waits for it (Done, or a context derived from
// this one): most calls end long before their deadline, and a caller that
// returns quickly never waits. Err compares the clock with the deadline
// itself, so a Ctx whose deadline has passed reports
// context.DeadlineExceeded either way.
//
// Children derived with the context package register through AfterFunc
// (the package looks for that method), and end with the Ctx's Err and
// Cause, as children of a standard context do.
//
// context.Cause finds a cause through a private key that only the context
// package's own cancelCtx answers; a Ctx ended with a cause of its own
// makes one then, to hold it. Without one, context.Cause falls back to Err,
// which is the cause of a deadline and of a cancel without a reason: those
// cost nothing.
package callctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Ctx is the context of one call. Its parent gives it values and is never
// done.
type Ctx struct {
	deadline time.Time // zero: none
	parent   context.Context

	// cause, when the context ended with a cause other than its Err, is a
	// cancelled cancelCtx that holds it for context.Cause: Value asks it
	// first, and it answers only the context package's private key.
	cause atomic.Pointer[causeCtx]

	mu    sync.Mutex
	err   error         // set once the context is done; guarded by mu
	done  chan struct{} // made when first asked for; guarded by mu
	timer *time.Timer   // armed while something waits for the deadline; guarded by mu
	after []*afterFunc  // run when the context is done; guarded by mu
}

type afterFunc struct{ f func() }

type causeCtx struct{ context.Context }

var _ context.Context = (*Ctx)(nil)

// New returns the context of a call that has timeout to run (no deadline
// when it is 0 or less), with values from parent. Only parent's values
// count: a parent that can be done is cut off from its cancellation
// (context.WithoutCancel), which costs an allocation; pass one that cannot.
func New(parent context.Context, timeout time.Duration) *Ctx {
	c := new(Ctx)
	c.Init(parent, timeout)
	return c
}

// Init makes c, a zero Ctx that is not in use yet, what New returns: for a
// Ctx inside a larger object, which then costs no allocation of its own.
func (c *Ctx) Init(parent context.Context, timeout time.Duration) {
	if parent.Done() != nil {
		parent = context.WithoutCancel(parent)
	}
	c.parent = parent
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
	}
}

func (c *Ctx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *Ctx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	after := c.armLocked()
	done := c.done
	c.mu.Unlock()
	runAll(after)
	return done
}

func (c *Ctx) Err() error {
	c.mu.Lock()
	after := c.expireLocked()
	err := c.err
	c.mu.Unlock()
	runAll(after)
	return err
}

// Value returns the parent's values.
func (c *Ctx) Value(key any) any {
	if cc := c.cause.Load(); cc != nil {
		if v := cc.Value(key); v != nil {
			return v
		}
	}
	return c.parent.Value(key)
}

// AfterFunc arranges for f to run once the context is done, and returns a
// stop that unregisters f, reporting whether it did. The context package
// uses it for contexts derived from this one. f runs on the goroutine that
// ends the context, or on its own when the context has ended already.
func (c *Ctx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	c.mu.Lock()
	after := c.armLocked()
	if c.err != nil {
		c.mu.Unlock()
		runAll(after)
		// Not on this goroutine: the context package holds the child's
		// lock while it registers, and f takes it.
		go f()
		return func() bool { return false }
	}
	c.after = append(c.after, a)
	c.mu.Unlock()
	runAll(after)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, b := range c.after {
			if b == a {
				c.after = append(c.after[:i], c.after[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Cancel ends the context with cause (context.Canceled when nil), unless it
// has ended already (or its deadline has passed, which it then reports).
func (c *Ctx) Cancel(cause error) {
	if cause == nil {
		cause = context.Canceled
	}
	c.mu.Lock()
	after := c.expireLocked()
	if c.err == nil {
		after = c.endLocked(context.Canceled, cause)
	}
	c.mu.Unlock()
	runAll(after)
}

// armLocked starts the deadline's timer, which from now on someone waits
// for; a deadline already past ends the context at once.
func (c *Ctx) armLocked() []*afterFunc {
	if c.err != nil || c.timer != nil || c.deadline.IsZero() {
		return nil
	}
	d := time.Until(c.deadline)
	if d <= 0 {
		return c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
	}
	c.timer = time.AfterFunc(d, c.expire)
	return nil
}

// expire ends the context for its deadline; its timer calls it.
func (c *Ctx) expire() {
	c.mu.Lock()
	var after []*afterFunc
	if c.err == nil {
		after = c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
	}
	c.mu.Unlock()
	runAll(after)
}

// expireLocked ends the context if its deadline has passed.
func (c *Ctx) expireLocked() []*afterFunc {
	if c.err != nil || c.deadline.IsZero() || time.Now().Before(c.deadline) {
		return nil
	}
	return c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
}

// endLocked makes the context done and returns the functions to run for
// it, which the caller runs once it has released mu.
func (c *Ctx) endLocked(err, cause error) []*afterFunc {
	c.err = err
	if cause != err {
		cc, set := context.WithCancelCause(context.Background())
		set(cause)
		c.cause.Store(&causeCtx{cc})
	}
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	after := c.after
	c.after = nil
	return after
}

func runAll(after []*afterFunc) {
	for _, a := range after {
		a.f()
	}
}

func (c *Ctx) String() string { return "callctx.Ctx" }
