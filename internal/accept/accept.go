// Package accept is the accept loop the kernel's stream front ends share:
// temporary errors (out of descriptors or memory, an aborted handshake) are
// retried with a capped backoff, anything else ends the loop, and a stop
// requested by the front end ends it quietly.
package accept

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// maxBackoff caps the pause between failed accepts.
const maxBackoff = time.Second

// Loop accepts connections from ln and hands each to handle, until handle
// returns false (the front end is shutting down; the connection is its to
// close) or Accept fails. A failure after stopped reports true returns nil;
// a temporary one is logged and retried after a pause that done cuts short;
// any other is returned, wrapped with what ("scgi listener web").
func Loop(ln net.Listener, what string, log *slog.Logger, done <-chan struct{}, stopped func() bool, handle func(net.Conn) bool) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if stopped() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) || !Temporary(err) {
				return fmt.Errorf("%s: %w", what, err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), maxBackoff)
			log.Warn("accept failed; retrying", "delay", backoff, "error", err)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
			}
			continue
		}
		backoff = 0
		if !handle(c) {
			return nil
		}
	}
}

// Temporary reports whether an Accept error is worth retrying.
func Temporary(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
