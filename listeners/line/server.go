package line

import (
	"net"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/internal/accept"
)

// Defaults for a Limits' zero values.
const (
	defaultMaxLine      = 4096
	defaultIdleTimeout  = 5 * time.Minute
	defaultMaxOutput    = 1 << 20
	defaultWriteTimeout = 30 * time.Second
)

const (
	// readSize is the size of the pooled read buffers. A connection holds
	// one only while it frames and dispatches what it read.
	readSize = 8 << 10
	// maxWrite bounds one write to the client, so that WriteTimeout bounds
	// a slow but steady reader's progress rather than the whole queue.
	maxWrite = 64 << 10
	// lingerTime bounds how long a connection the server ends is drained
	// of input after its last output, so that the client reads that
	// output rather than a reset caused by closing with unread input.
	lingerTime = 500 * time.Millisecond
	// lingerMax bounds how many bytes are drained then.
	lingerMax = 1 << 20
	// handoverFlush bounds how long a session being handed over writes
	// its output (and Limits.WriteTimeout, when shorter); what is left
	// travels in Handover.Output.
	handoverFlush = 200 * time.Millisecond
)

// withDefaults returns l with its zero (or negative) numbers replaced by
// their defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxLine <= 0 {
		l.MaxLine = defaultMaxLine
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = defaultIdleTimeout
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = defaultMaxOutput
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = defaultWriteTimeout
	}
	l.MaxConnections = accept.Max(l.MaxConnections)
	return l
}

// track registers an accepted connection, or returns nil once Shutdown has
// begun, or reports refused when Limits.MaxConnections are open. A
// connection accepted while a Detach waits for its Serve loops to end (it
// was in Accept when the listener closed) is served, Open event included,
// and handed over with the others.
func (s *Server) track(nc net.Conn) (c *Conn, refused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown && (!s.detached || s.forced) {
		return nil, false
	}
	if len(s.conns) >= s.limits.Load().MaxConnections {
		return nil, true
	}
	c = &Conn{
		ID:        s.nextID(),
		Listener:  s.name,
		Remote:    nc.RemoteAddr(),
		Local:     nc.LocalAddr(),
		Since:     time.Now(),
		s:         s,
		nc:        nc,
		inEvent:   true, // the Open event comes first
		detaching: s.detached,
	}
	c.rc = rawConn(nc)
	c.f.setLimits(s.limits.Load())
	s.conns[c.ID] = c
	s.accepted.Add(1)
	s.open.Add(1)
	return c, false
}

// rawConn returns nc's RawConn, or nil when it has none.
func rawConn(nc net.Conn) syscall.RawConn {
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// untrack forgets a connection whose goroutine, and writer, have finished.
func (s *Server) untrack(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[c.ID] == c {
		delete(s.conns, c.ID)
	}
	s.open.Add(-1)
	s.checkIdleLocked()
}

// checkIdleLocked closes idle once Shutdown has begun and no connection is
// left; after a Detach, once no Serve loop may track one either.
func (s *Server) checkIdleLocked() {
	if s.shutdown && len(s.conns) == 0 && (!s.detached || s.serving == 0) && !s.isIdle {
		s.isIdle = true
		close(s.idle)
	}
}

func (s *Server) isShutdown() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Server) isForced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forced
}

func (s *Server) getBuf() *[]byte  { return s.bufs.Get().(*[]byte) }
func (s *Server) putBuf(b *[]byte) { s.bufs.Put(b) }
