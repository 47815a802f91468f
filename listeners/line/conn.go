package line

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"syscall"
	"time"
)

// serveConn runs the session of c. Its goroutine reads, frames and
// dispatches, so the events of c come one at a time and in order, and TCP
// backpressure bounds what a client sends ahead. It owns c's writer
// goroutine and waits for it before it returns.
func (s *Server) serveConn(c *Conn) {
	defer s.untrack(c)
	c.logAt(slog.LevelDebug, "connection opened")
	r, ok := c.dispatch(Event{Kind: Open})
	if !ok {
		_ = c.output(nil, r.Lines, true, false)
		c.finish(true)
		c.logAt(slog.LevelDebug, "connection closed", "reason", "open failed",
			"bytes_in", c.BytesIn(), "bytes_out", c.BytesOut())
		return
	}
	c.answer(r, ok)
	c.leave()
	c.serve()
}

// serveAdopted runs the session of c, adopted from another server: the
// output handed over is written first, then the input handed over is
// framed as if it had just been read.
func (s *Server) serveAdopted(c *Conn, input []byte) {
	defer s.untrack(c)
	c.logAt(slog.LevelDebug, "connection adopted")
	c.mu.Lock()
	c.startWriterLocked()
	c.mu.Unlock()
	c.f.setLimits(s.limits.Load())
	c.frame(input)
	c.serve()
}

// serve runs the session from its next read to its end: a Close event
// and the close of the connection, or its handover to a Detach.
func (c *Conn) serve() {
	reason := c.readLoop()
	if reason == reasonHandover {
		if c.handOver() {
			c.logAt(slog.LevelDebug, "connection handed over",
				"bytes_in", c.BytesIn(), "bytes_out", c.BytesOut())
			return
		}
		reason = c.ending()
	}
	r, _ := c.dispatch(Event{Kind: Close, Reason: reason})
	_ = c.output(nil, r.Lines, true, false)
	c.finish(reason != ReasonClient && reason != ReasonRead)
	c.logAt(slog.LevelDebug, "connection closed", "reason", reason,
		"bytes_in", c.BytesIn(), "bytes_out", c.BytesOut())
}

// readLoop reads and dispatches until the session ends, and returns why.
// Between reads it holds no read buffer.
func (c *Conn) readLoop() string {
	for {
		if r := c.ending(); r != "" {
			return r
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.limits.Load().IdleTimeout))
		// A stop between the check above and this deadline had its wake-up
		// overwritten by it: look again.
		if r := c.ending(); r != "" {
			return r
		}
		bp, n, err := c.read()
		if n > 0 {
			c.bytesIn.Add(int64(n))
			// What was read is framed with the limits of now, so that
			// SetLimits applies to the input that follows it.
			c.f.setLimits(c.s.limits.Load())
			c.frame((*bp)[:n])
		}
		if bp != nil {
			c.s.putBuf(bp)
		}
		if err != nil {
			// A deadline that a stop or a Detach set is no idle timeout.
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if r := c.ending(); r != "" {
					return r
				}
			}
			reason := readReason(err)
			if reason == ReasonRead && c.ending() == "" {
				c.logAt(slog.LevelWarn, "reading from the client failed", "error", err)
			}
			return c.end(reason)
		}
	}
}

func readReason(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return ReasonClient
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonIdle
	}
	return ReasonRead
}

// read reads once. With a RawConn it takes a buffer from the pool only
// when the socket has data, so that a connection waiting for input holds
// none. The buffer returned, if any, goes back to the pool with putBuf.
func (c *Conn) read() (bp *[]byte, n int, err error) {
	if c.rc == nil {
		bp = c.s.getBuf()
		n, err = c.nc.Read(*bp)
		return bp, n, err
	}
	var rerr error
	err = c.rc.Read(func(fd uintptr) bool {
		b := c.s.getBuf()
		for {
			n, rerr = syscall.Read(int(fd), *b)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			c.s.putBuf(b)
			return false
		}
		bp = b
		return true
	})
	n = max(n, 0)
	switch {
	case err != nil:
	case rerr != nil:
		err = os.NewSyscallError("read", rerr)
	case n == 0:
		err = io.EOF
	}
	return bp, n, err
}

// frame feeds p to the framer and dispatches the events it completes,
// until the session ends. When a Detach stops it, what is left of p is
// kept in c.input for the handover (p may be a pooled buffer).
func (c *Conn) frame(p []byte) {
	defer c.f.release()
	for len(p) > 0 {
		if ok, keep := c.enter(); !ok {
			if keep {
				c.input = bytes.Clone(p)
			}
			return
		}
		n, ev, ok := c.f.step(p)
		p = p[n:]
		if out := c.f.takeOut(); out != nil {
			_ = c.output(out, nil, false, false)
		}
		if ok {
			c.s.requests.Add(1)
			c.answer(c.dispatch(ev))
		}
		c.leave()
	}
}

// enter marks the goroutine as in an event before it frames more input,
// unless the session ends or is being detached; keep says the input not
// framed must then be kept for a handover.
func (c *Conn) enter() (ok, keep bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason != "" || c.detaching {
		return false, c.reason == "" && c.detaching
	}
	c.inEvent = true
	return true, false
}

// leave marks the end of what enter began, or of the Open event.
func (c *Conn) leave() {
	c.mu.Lock()
	c.inEvent = false
	c.mu.Unlock()
}

// dispatch delivers ev, and reports whether the Dispatcher answered it
// without an error or a panic; it logs and counts failures.
func (c *Conn) dispatch(ev Event) (r Reply, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.s.errors.Add(1)
			c.logAt(slog.LevelError, "dispatcher panic", "kind", ev.Kind.String(),
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			r, ok = Reply{}, false
		}
	}()
	r, err := c.s.d.DispatchLine(c.s.ctx, c, ev)
	if err != nil {
		c.s.errors.Add(1)
		c.logAt(slog.LevelDebug, "dispatch failed", "kind", ev.Kind.String(), "error", err)
		return r, false
	}
	return r, true
}

// answer acts on the reply to an event other than Close. A failed
// dispatch's reply has its Lines written and its Close honoured; its
// Collect is not.
func (c *Conn) answer(r Reply, ok bool) {
	_ = c.output(nil, r.Lines, true, false)
	if r.Close {
		c.end(ReasonHandler)
	}
	if r.Collect == nil || !ok {
		return
	}
	if r.Collect.Terminator == "" {
		c.s.errors.Add(1)
		c.logAt(slog.LevelWarn, "a reply asked to collect a block without a terminator; ignored")
		return
	}
	c.f.collect(*r.Collect)
}

// end records why the session ends, unless a reason was recorded before,
// and returns the reason that holds.
func (c *Conn) end(reason string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason == "" {
		c.reason = reason
	}
	return c.reason
}

// ending returns why the session ends, or "" while it goes on;
// reasonHandover while a Detach waits for it.
func (c *Conn) ending() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason == "" && c.detaching {
		return reasonHandover
	}
	return c.reason
}

// stop ends the session from outside its goroutine, and wakes that
// goroutine if it waits for input.
func (c *Conn) stop(reason string) {
	c.end(reason)
	_ = c.nc.SetReadDeadline(time.Now())
}

// forceClose cuts the connection for a Shutdown that ran out of time.
func (c *Conn) forceClose() {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = ReasonShutdown
	}
	c.dropped, c.out = true, nil
	c.mu.Unlock()
	c.nc.Close()
}

// output queues b, then lines each followed by CR LF, for the writer,
// and starts the writer if none runs. With escape and Limits.Telnet, IAC
// bytes are doubled. Send's output (fromSend) is refused once the session
// ends; the server's own (replies, telnet answers) until it is flushed.
// Output that would pass Limits.MaxOutput drops the connection.
func (c *Conn) output(b []byte, lines [][]byte, escape, fromSend bool) error {
	lim := c.s.limits.Load()
	esc := escape && lim.Telnet
	size := encodedLen(b, esc)
	for _, l := range lines {
		size += encodedLen(l, esc) + 2
	}
	c.mu.Lock()
	if c.dropped || c.sealed || fromSend && c.reason != "" {
		c.mu.Unlock()
		return ErrClosed
	}
	if size == 0 {
		c.mu.Unlock()
		return nil
	}
	if unsent := len(c.out) + c.inflight; unsent+size > lim.MaxOutput {
		if c.reason == "" {
			c.reason = ReasonOverflow
		}
		c.dropped, c.out = true, nil
		c.mu.Unlock()
		c.nc.Close()
		c.s.errors.Add(1)
		c.logAt(slog.LevelWarn, "the client reads too slowly; connection dropped",
			"unsent", unsent, "output", size, "max_output", lim.MaxOutput)
		return ErrOutputFull
	}
	c.out = slices.Grow(c.out, size)
	c.out = appendEncoded(c.out, b, esc)
	for _, l := range lines {
		c.out = append(appendEncoded(c.out, l, esc), '\r', '\n')
	}
	c.startWriterLocked()
	c.mu.Unlock()
	return nil
}

// startWriterLocked starts the writer when output waits and none runs,
// unless the output is being flushed for a handover (its writer is the
// last) or the connection was dropped.
func (c *Conn) startWriterLocked() {
	if c.writing != nil || c.handing || c.dropped || len(c.out) == 0 {
		return
	}
	done := make(chan struct{})
	c.writing = done
	go c.writeLoop(done)
}

// encodedLen is the length of b on the wire.
func encodedLen(b []byte, esc bool) int {
	n := len(b)
	if esc {
		for _, x := range b {
			if x == tnIAC {
				n++
			}
		}
	}
	return n
}

// appendEncoded appends b to dst, with esc doubling IAC bytes.
func appendEncoded(dst, b []byte, esc bool) []byte {
	if !esc {
		return append(dst, b...)
	}
	for _, x := range b {
		dst = append(dst, x)
		if x == tnIAC {
			dst = append(dst, tnIAC)
		}
	}
	return dst
}

// writeLoop writes the queue to the client until it is empty, then exits
// (a connection without output has no writer goroutine). It closes done
// when it exits.
func (c *Conn) writeLoop(done chan struct{}) {
	defer close(done)
	for {
		c.mu.Lock()
		if c.dropped || len(c.out) == 0 {
			c.writing = nil
			c.mu.Unlock()
			return
		}
		b := c.out
		c.out, c.inflight = nil, len(b)
		c.mu.Unlock()
		if n, err := c.write(b); err != nil {
			if c.putBack(b[n:], err) {
				return
			}
			c.writeFailed(err)
			c.mu.Lock()
			c.writing = nil
			c.mu.Unlock()
			return
		}
	}
}

// putBack returns the unwritten rest of a write that ran out of time
// while the output is flushed for a handover to the head of the queue,
// and ends the writer: the rest goes with the session. It reports
// whether it did.
func (c *Conn) putBack(rest []byte, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.handing || c.dropped || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	c.out = append(rest, c.out...)
	c.inflight, c.writing = 0, nil
	return true
}

// write writes b in pieces, each within Limits.WriteTimeout and, once the
// session is being flushed, within the flush's bound. It returns how much
// it wrote.
func (c *Conn) write(b []byte) (written int, err error) {
	for len(b) > 0 {
		p := b[:min(len(b), maxWrite)]
		dl := time.Now().Add(c.s.limits.Load().WriteTimeout)
		fb := c.flushBy.Load()
		if fb != 0 && fb < dl.UnixNano() {
			dl = time.Unix(0, fb)
		}
		_ = c.nc.SetWriteDeadline(dl)
		// A flush bound set since it was read may have had its deadline
		// overwritten by this one: apply it again.
		if fb2 := c.flushBy.Load(); fb2 != fb && fb2 != 0 && fb2 < dl.UnixNano() {
			_ = c.nc.SetWriteDeadline(time.Unix(0, fb2))
		}
		n, err := c.nc.Write(p)
		written += n
		c.bytesOut.Add(int64(n))
		c.mu.Lock()
		c.inflight -= n
		c.mu.Unlock()
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// writeFailed drops the connection after a failed write. It is quiet when
// the connection was dropped already, or the client had gone.
func (c *Conn) writeFailed(err error) {
	c.mu.Lock()
	quiet := c.dropped || c.reason == ReasonClient
	c.dropped, c.out, c.inflight = true, nil, 0
	if c.reason == "" {
		c.reason = ReasonWrite
	}
	c.mu.Unlock()
	c.nc.Close()
	if quiet || c.s.isForced() {
		c.logAt(slog.LevelDebug, "writing to the client failed", "error", err)
		return
	}
	c.s.errors.Add(1)
	c.logAt(slog.LevelWarn, "writing to the client failed; connection dropped", "error", err)
}

// finish flushes the output, within Limits.WriteTimeout, waits for the
// writer, and closes the connection; with linger it first lets the client
// read the output (see lingerTime).
func (c *Conn) finish(linger bool) {
	c.mu.Lock()
	c.sealed = true
	c.flushBy.Store(time.Now().Add(c.s.limits.Load().WriteTimeout).UnixNano())
	done := c.writing
	c.mu.Unlock()
	if done != nil {
		<-done
	}
	c.mu.Lock()
	dropped := c.dropped
	c.mu.Unlock()
	if linger && !dropped {
		c.linger()
	}
	c.nc.Close()
}

// linger half-closes the connection and drains its input for a while, so
// that input the client sent after the end does not make the close a
// reset that destroys the output the client has yet to read.
func (c *Conn) linger() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	for total := 0; total < lingerMax; {
		bp, n, err := c.read()
		if bp != nil {
			c.s.putBuf(bp)
		}
		c.bytesIn.Add(int64(n))
		total += n
		if err != nil {
			return
		}
	}
}

// logAt logs msg with the connection's attributes.
func (c *Conn) logAt(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !c.s.log.Enabled(ctx, level) {
		return
	}
	c.s.log.Log(ctx, level, msg, append([]any{"conn", c.ID, "remote", addrString(c.Remote)}, args...)...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
