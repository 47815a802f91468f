package callctx

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type baseKey struct{}

func newTest(timeout time.Duration) *Ctx {
	return New(context.WithValue(context.Background(), baseKey{}, "from the parent"), timeout)
}

// waitDone fails the test unless ctx is done within a few seconds.
func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not done", what)
	}
}

func TestDeadline(t *testing.T) {
	t.Run("reported", func(t *testing.T) {
		t0 := time.Now()
		c := newTest(time.Hour)
		d, ok := c.Deadline()
		if !ok || d.Before(t0.Add(time.Hour)) || d.After(time.Now().Add(time.Hour)) {
			t.Errorf("deadline %v %v, want an hour from now", d, ok)
		}
		if c.Err() != nil {
			t.Errorf("Err %v before the deadline", c.Err())
		}
		if _, ok := newTest(0).Deadline(); ok {
			t.Error("a call without a timeout has a deadline")
		}
	})
	t.Run("passes unwatched", func(t *testing.T) {
		// Nothing waits on Done, so no timer runs: Err still tells.
		c := newTest(time.Millisecond)
		time.Sleep(5 * time.Millisecond)
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err %v, want DeadlineExceeded", err)
		}
		if cause := context.Cause(c); !errors.Is(cause, context.DeadlineExceeded) {
			t.Errorf("Cause %v", cause)
		}
		waitDone(t, c, "Done after the deadline passed")
		// A cancellation after the deadline changes nothing.
		c.Cancel(errors.New("late"))
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err %v after a late cancel", c.Err())
		}
	})
	t.Run("watched", func(t *testing.T) {
		c := newTest(20 * time.Millisecond)
		waitDone(t, c, "Done at the deadline")
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(c), context.DeadlineExceeded) {
			t.Errorf("Err %v, Cause %v", c.Err(), context.Cause(c))
		}
	})
	t.Run("child", func(t *testing.T) {
		// A child with a later deadline of its own keeps the call's, and
		// ends as the call's does: with DeadlineExceeded, as the standard
		// library's children of an expired context do.
		c := newTest(20 * time.Millisecond)
		child, cancel := context.WithTimeout(c, time.Hour)
		defer cancel()
		if d, _ := child.Deadline(); !d.Equal(c.deadline) {
			t.Errorf("child's deadline %v, want the call's %v", d, c.deadline)
		}
		waitDone(t, child, "the child at the call's deadline")
		if !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Errorf("child's Err %v, want DeadlineExceeded", child.Err())
		}
	})
}

func TestCancel(t *testing.T) {
	cause := errors.New("client gone")
	t.Run("itself", func(t *testing.T) {
		c := newTest(time.Hour)
		done := c.Done()
		c.Cancel(cause)
		select {
		case <-done:
		default:
			t.Fatal("Done not closed by cancel")
		}
		if !errors.Is(c.Err(), context.Canceled) || context.Cause(c) != cause {
			t.Errorf("Err %v, Cause %v", c.Err(), context.Cause(c))
		}
		c.Cancel(errors.New("second"))
		if context.Cause(c) != cause {
			t.Errorf("a second cancel replaced the cause: %v", context.Cause(c))
		}
		waitDone(t, c, "Done asked for after the cancel")
	})
	t.Run("children", func(t *testing.T) {
		c := newTest(0)
		child, cancel := context.WithCancel(c)
		defer cancel()
		grandchild, cancel2 := context.WithTimeout(child, time.Hour)
		defer cancel2()
		ran := make(chan struct{})
		context.AfterFunc(c, func() { close(ran) })
		stopped := context.AfterFunc(c, func() { t.Error("a stopped AfterFunc ran") })
		if !stopped() {
			t.Error("stop reported the AfterFunc gone already")
		}
		c.Cancel(cause)
		waitDone(t, grandchild, "the grandchild")
		if !errors.Is(child.Err(), context.Canceled) || context.Cause(child) != cause || context.Cause(grandchild) != cause {
			t.Errorf("child Err %v, Cause %v; grandchild Cause %v", child.Err(), context.Cause(child), context.Cause(grandchild))
		}
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			t.Fatal("context.AfterFunc did not run")
		}
		late, cancel3 := context.WithCancel(c)
		defer cancel3()
		waitDone(t, late, "a child made after the cancel")
	})
	t.Run("a child cancelled alone", func(t *testing.T) {
		c := newTest(0)
		child, cancel := context.WithCancel(c)
		cancel()
		if c.Err() != nil {
			t.Errorf("cancelling a child ended the call: %v", c.Err())
		}
		if len(c.after) != 0 {
			t.Errorf("the cancelled child is still registered (%d)", len(c.after))
		}
		_ = child
	})
	t.Run("concurrently", func(t *testing.T) {
		for range 100 {
			c := newTest(time.Millisecond)
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					switch i {
					case 0:
						c.Cancel(cause)
					case 1:
						<-c.Done()
					case 2:
						child, cancel := context.WithCancel(c)
						<-child.Done()
						cancel()
					default:
						for c.Err() == nil {
							time.Sleep(100 * time.Microsecond)
						}
					}
				}()
			}
			wg.Wait()
			if err := c.Err(); !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Err %v", err)
			}
		}
	})
}

func TestValue(t *testing.T) {
	c := newTest(0)
	if got := c.Value(baseKey{}); got != "from the parent" {
		t.Errorf("a value of the parent: %v", got)
	}
}

func TestCauseHeld(t *testing.T) {
	t.Run("none before the end", func(t *testing.T) {
		c := newTest(time.Hour)
		if cause := context.Cause(c); cause != nil {
			t.Errorf("Cause %v of a live context, want nil", cause)
		}
	})
	t.Run("cancel without a reason", func(t *testing.T) {
		c := newTest(time.Hour)
		c.Cancel(nil)
		if !errors.Is(c.Err(), context.Canceled) || context.Cause(c) != context.Canceled {
			t.Errorf("Err %v, Cause %v; want Canceled for both", c.Err(), context.Cause(c))
		}
		if c.cause.Load() != nil {
			t.Error("a cancel without a reason made a holder for its cause")
		}
	})
	t.Run("values beside the cause", func(t *testing.T) {
		c := newTest(0)
		c.Cancel(errors.New("gone"))
		if v := c.Value(baseKey{}); v != "from the parent" {
			t.Errorf("parent's value %v after a cancel with a cause", v)
		}
	})
	t.Run("a cancellable parent", func(t *testing.T) {
		// Its cancellation and its cause are not the call's.
		parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), baseKey{}, "v"))
		c := New(parent, 0)
		cancel(errors.New("the parent's"))
		if c.Err() != nil || context.Cause(c) != nil {
			t.Errorf("Err %v, Cause %v after the parent ended", c.Err(), context.Cause(c))
		}
		if c.Value(baseKey{}) != "v" {
			t.Error("the parent's value is lost")
		}
		c.Cancel(nil)
		if context.Cause(c) != context.Canceled {
			t.Errorf("Cause %v, want Canceled", context.Cause(c))
		}
	})
}

// BenchmarkCall is a call's life as the kernel's HTTP calls live it: made
// with a deadline, asked for its Err, ended.
func BenchmarkCall(b *testing.B) {
	parent := context.WithoutCancel(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		c := New(parent, time.Minute)
		if c.Err() != nil {
			b.Fatal(c.Err())
		}
		c.Cancel(nil)
	}
}
