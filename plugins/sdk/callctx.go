package sdk

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// callCtx is the context of one call: its deadline, its cancellation and
// cause, and the values the SDK puts in it (the Host, the listener, the
// local address). The standard library's layers took five allocations and a
// timer per call for the same, and registered each call with its stream's
// context under a lock that every call contends for.
//
// The deadline arms no timer until something waits for it (Done, or a
// context derived from this one): most calls end long before their
// deadline, and no handler that returns quickly ever waits. Err compares
// the clock with the deadline itself, so a context whose deadline has
// passed reports context.DeadlineExceeded either way.
//
// Children derived with the context package register through AfterFunc
// (the package looks for that method), and are cancelled with this
// context's Err and Cause, as children of a standard context are.
type callCtx struct {
	deadline time.Time // zero: none
	host     *Host
	listener string   // "" when the kernel named none
	local    net.Addr // nil when the kernel sent none

	// cause is a cancelCtx, cancelled with this context, that holds the
	// cause for context.Cause; Value hands it out for the context
	// package's private key, and other values come from its parent, the
	// stream's (which is never done).
	cause    context.Context
	setCause context.CancelCauseFunc

	mu    sync.Mutex
	err   error         // set once the call's context is done; guarded by mu
	done  chan struct{} // made when first asked for; guarded by mu
	timer *time.Timer   // armed while something waits for the deadline; guarded by mu
	after []*afterFunc  // run when the context is done; guarded by mu
}

type afterFunc struct{ f func() }

var _ context.Context = (*callCtx)(nil)

// newCallCtx returns the context of a call that has timeout to run (none
// when it is 0 or less), with values from base, which must never be done.
func newCallCtx(base context.Context, timeout time.Duration, h *Host) *callCtx {
	c := &callCtx{host: h}
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
	}
	c.cause, c.setCause = context.WithCancelCause(base)
	return c
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *callCtx) Done() <-chan struct{} {
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

func (c *callCtx) Err() error {
	c.mu.Lock()
	after := c.expireLocked()
	err := c.err
	c.mu.Unlock()
	runAll(after)
	return err
}

func (c *callCtx) Value(key any) any {
	switch key {
	case hostKey{}:
		if c.host != nil {
			return c.host
		}
	case listenerKey{}:
		if c.listener != "" {
			return c.listener
		}
	case http.LocalAddrContextKey:
		if c.local != nil {
			return c.local
		}
	}
	return c.cause.Value(key)
}

// AfterFunc arranges for f to run once the context is done, and returns a
// stop that unregisters f, reporting whether it did. The context package
// uses it for contexts derived from this one. f runs on the goroutine that
// ends the context, or on its own when the context has ended already.
func (c *callCtx) AfterFunc(f func()) (stop func() bool) {
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

// cancel ends the context with cause, unless it has ended already (or its
// deadline has passed, which it then reports).
func (c *callCtx) cancel(cause error) {
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
func (c *callCtx) armLocked() []*afterFunc {
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
func (c *callCtx) expire() {
	c.mu.Lock()
	var after []*afterFunc
	if c.err == nil {
		after = c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
	}
	c.mu.Unlock()
	runAll(after)
}

// expireLocked ends the context if its deadline has passed.
func (c *callCtx) expireLocked() []*afterFunc {
	if c.err != nil || c.deadline.IsZero() || time.Now().Before(c.deadline) {
		return nil
	}
	return c.endLocked(context.DeadlineExceeded, context.DeadlineExceeded)
}

// endLocked makes the context done and returns the functions to run for
// it, which the caller runs once it has released mu.
func (c *callCtx) endLocked(err, cause error) []*afterFunc {
	c.err = err
	c.setCause(cause)
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

func (c *callCtx) String() string { return "sdk.callContext" }
