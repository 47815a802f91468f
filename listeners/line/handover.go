package line

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"time"
)

// Handover is a live session as it leaves one server for another, in this
// process or the next kernel's (Server.Detach, Server.Adopt). Every field
// but File encodes with encoding/json.
type Handover struct {
	ID       uint64
	Listener string
	Remote   string // c.Remote.String(), "" when nil
	Local    string
	Since    time.Time
	State    map[string]string
	Version  string // the state's writer
	BytesIn  int64
	BytesOut int64
	// Input is what was read from the client and not yet delivered as an
	// event; Framer is the framer's state (a partial line, a block being
	// collected, telnet negotiation in progress), so that the next server
	// frames exactly as this one would have.
	Input  []byte
	Framer FramerState
	// Output is what was queued for the client and not yet written, as it
	// goes on the wire (with telnet, IAC already doubled).
	Output []byte
	// File is a duplicate of the connection's socket; the receiver owns it.
	File *os.File `json:"-"`
}

// reasonHandover is the reason of a session handed over, and what ending
// says while a Detach waits for one. It is never a Close event's.
const reasonHandover = "handed over"

// Detach takes every session out of this server for a handover: it stops
// accepting (as Shutdown does; ln is closed), lets the event each
// connection is in be answered (its reply lines are queued, a reply's
// Close is honoured normally: such a session is not handed over), stops
// each reader without a Close event, flushes what output it can within a
// short bound, and returns the sessions, by id, each with a duplicate of
// its socket that the caller owns. The server's own descriptors for those
// connections are closed without shutting the socket down: the client
// sees nothing, the duplicate keeps it open. A connection Serve accepts
// while Detach closes its listener gets its Open event here, then is
// handed over too.
//
// When ctx ends before a connection's event is answered, that connection
// is ended as Shutdown would end it (the dispatch is cancelled, the socket
// closed, a Close event with ReasonShutdown dispatched) and left out, and
// Detach returns ctx's error with the sessions it did hand over; sessions
// that were not in an event are handed over all the same. A session that
// cannot be handed over (its connection has no file descriptor) is ended
// as Shutdown would end it. Detach returns once every connection goroutine
// has exited. After it the server serves nothing; Shutdown may still be
// called and returns at once. A second Detach, or one after Shutdown,
// returns ErrServerClosed.
func (s *Server) Detach(ctx context.Context) ([]Handover, error) {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil, fmt.Errorf("line listener %s: detach: %w", s.name, ErrServerClosed)
	}
	s.shutdown, s.detached = true, true
	close(s.done)
	for ln := range s.lns {
		ln.Close()
	}
	conns := slices.Collect(maps.Values(s.conns))
	s.checkIdleLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.detach()
	}
	var cut bool
	select {
	case <-s.idle:
	case <-ctx.Done():
		s.mu.Lock()
		s.forced = true // no connection is tracked from now on
		conns = slices.Collect(maps.Values(s.conns))
		s.mu.Unlock()
		for _, c := range conns {
			if c.expire() {
				cut = true
			}
		}
		s.cancel()
		<-s.idle
	}
	s.cancel()
	s.mu.Lock()
	hs := s.handed
	s.handed = nil
	s.mu.Unlock()
	slices.SortFunc(hs, func(a, b Handover) int { return cmp.Compare(a.ID, b.ID) })
	if cut {
		return hs, fmt.Errorf("line listener %s: detach: %w", s.name, ctx.Err())
	}
	return hs, nil
}

// Adopt serves a session another server detached: no Open event is
// dispatched; Output is written first, then Input is framed and dispatched
// as if it had just been read, with the framer restored from Framer
// (under this server's Limits); the session's id, state, version,
// counters and Since are kept, its Listener is this server's name and its
// addresses are those of the socket. Adopt takes ownership of h.File,
// even when it fails (the connection is then closed). Adopted ids must not
// collide with ids this server hands out (the kernel makes its NextID
// counter start above them; without Config.NextID the server's own
// counter is moved past them); an id that is live here is refused with
// ErrBadHandover. Adopted sessions count against no Limits.MaxConnections.
// Adopt returns ErrServerClosed once Shutdown or Detach has begun.
func (s *Server) Adopt(h Handover) error {
	fail := func(err error) error {
		return fmt.Errorf("line listener %s: adopt conn %d: %w", s.name, h.ID, err)
	}
	if h.File == nil {
		return fail(fmt.Errorf("%w: no file", ErrBadHandover))
	}
	nc, err := net.FileConn(h.File)
	h.File.Close()
	if err != nil {
		return fail(err)
	}
	if h.ID == 0 {
		nc.Close()
		return fail(fmt.Errorf("%w: no id", ErrBadHandover))
	}
	c := &Conn{
		ID:       h.ID,
		Listener: s.name,
		Remote:   nc.RemoteAddr(),
		Local:    nc.LocalAddr(),
		Since:    h.Since,
		s:        s,
		nc:       nc,
		rc:       rawConn(nc),
	}
	c.f.setLimits(s.limits.Load())
	if err := c.f.restore(h.Framer); err != nil {
		nc.Close()
		return fail(err)
	}
	c.SetSession(h.State, h.Version)
	c.bytesIn.Store(h.BytesIn)
	c.bytesOut.Store(h.BytesOut)
	if len(h.Output) > 0 {
		c.out = bytes.Clone(h.Output)
	}
	input := bytes.Clone(h.Input)

	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		return fail(ErrServerClosed)
	}
	if s.conns[c.ID] != nil {
		s.mu.Unlock()
		nc.Close()
		return fail(fmt.Errorf("%w: id in use", ErrBadHandover))
	}
	s.conns[c.ID] = c
	s.open.Add(1)
	if s.ownIDs {
		for {
			last := s.lastID.Load()
			if last >= c.ID || s.lastID.CompareAndSwap(last, c.ID) {
				break
			}
		}
	}
	s.mu.Unlock()
	go s.serveAdopted(c, input)
	return nil
}

// detach asks the session to stop for a handover at its next event
// boundary, and wakes its goroutine if it waits for input. A session
// already ending is left to end (and to drain its input while it
// lingers).
func (c *Conn) detach() {
	c.mu.Lock()
	c.detaching = true
	wake := c.reason == ""
	c.mu.Unlock()
	if wake {
		_ = c.nc.SetReadDeadline(time.Now())
	}
}

// expire ends, as a forced Shutdown does, a session that a Detach whose
// time ran out cannot hand over: one in an event, or ending for a reason
// of its own. It reports whether it did; a session that is not is on its
// way to being handed over without another dispatch.
func (c *Conn) expire() bool {
	c.mu.Lock()
	if c.reason == reasonHandover || c.reason == "" && !c.inEvent {
		c.mu.Unlock()
		return false
	}
	if c.reason == "" {
		c.reason = ReasonShutdown
	}
	c.dropped, c.out = true, nil
	c.mu.Unlock()
	c.nc.Close()
	return true
}

// handOver hands the session over to the Detach that stopped it: it
// duplicates the socket, flushes what output it can within handoverFlush,
// takes the rest, closes its own descriptor and records the Handover. It
// reports false, having handed nothing over, when the session ended for a
// reason of its own meanwhile or its socket cannot be duplicated (it is
// then ended with ReasonShutdown); the caller ends it as usual.
func (c *Conn) handOver() bool {
	f, err := c.dup()
	if err != nil {
		c.logAt(slog.LevelWarn, "the connection cannot be handed over; ending it", "error", err)
		c.end(ReasonShutdown)
		return false
	}
	lim := c.s.limits.Load()
	flushBy := time.Now().Add(min(lim.WriteTimeout, handoverFlush))
	c.mu.Lock()
	c.handing = true
	c.flushBy.Store(flushBy.UnixNano())
	done := c.writing
	c.mu.Unlock()
	if done != nil {
		// Cut short a write in progress, whose deadline was set before.
		_ = c.nc.SetWriteDeadline(flushBy)
		<-done
	}
	c.mu.Lock()
	if c.reason != "" || c.dropped {
		c.handing = false
		c.flushBy.Store(0)
		c.startWriterLocked()
		c.mu.Unlock()
		f.Close()
		return false
	}
	c.reason, c.sealed = reasonHandover, true
	out := c.out
	c.out = nil
	c.mu.Unlock()
	// Only this descriptor goes: the socket stays open through f, and no
	// shutdown(2) is made, so the client sees nothing.
	c.nc.Close()
	state, version := c.Session()
	h := Handover{
		ID:       c.ID,
		Listener: c.Listener,
		Remote:   addrString(c.Remote),
		Local:    addrString(c.Local),
		Since:    c.Since,
		State:    state,
		Version:  version,
		BytesIn:  c.BytesIn(),
		BytesOut: c.BytesOut(),
		Input:    c.input,
		Framer:   c.f.state(),
		Output:   out,
		File:     f,
	}
	c.input = nil
	c.s.mu.Lock()
	c.s.handed = append(c.s.handed, h)
	c.s.mu.Unlock()
	return true
}

// dup returns a duplicate of the connection's socket.
func (c *Conn) dup() (*os.File, error) {
	fc, ok := c.nc.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("a %T has no file descriptor", c.nc)
	}
	f, err := fc.File()
	if err != nil {
		return nil, fmt.Errorf("duplicating the socket: %w", err)
	}
	return f, nil
}
