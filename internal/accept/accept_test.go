package accept

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
)

// script is a listener that returns its errors in turn, then connections.
type script struct {
	net.Listener
	errs []error
}

func (s *script) Accept() (net.Conn, error) {
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		if err != nil {
			return nil, err
		}
	}
	c, _ := net.Pipe()
	return c, nil
}

func TestLoop(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	never := func() bool { return false }
	emfile := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}

	// Temporary errors are retried; the loop ends when handle says so.
	var handled int
	ln := &script{errs: []error{emfile, emfile, nil, nil}}
	err := Loop(ln, "test", log, nil, never, func(c net.Conn) bool {
		c.Close()
		handled++
		return handled < 2
	})
	if err != nil || handled != 2 {
		t.Fatalf("Loop = %v after %d connections, want nil after 2", err, handled)
	}

	// Any other error ends it, wrapped; after a stop, quietly.
	boom := errors.New("boom")
	err = Loop(&script{errs: []error{boom}}, "web", log, nil, never, nil)
	if !errors.Is(err, boom) || err.Error() != "web: boom" {
		t.Fatalf("Loop = %v, want web: boom", err)
	}
	if err := Loop(&script{errs: []error{net.ErrClosed}}, "web", log, nil, func() bool { return true }, nil); err != nil {
		t.Fatalf("Loop after a stop = %v", err)
	}

	for _, tc := range []struct {
		err  error
		want bool
	}{
		{emfile, true},
		{fmt.Errorf("wrapped: %w", syscall.ECONNABORTED), true},
		{net.ErrClosed, false},
		{boom, false},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
