package line

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/internal/accept"
)

// Dispatcher answers the events of line connections. Implementations are
// safe for concurrent use.
type Dispatcher interface {
	// DispatchLine delivers ev, an event of c, and returns what to do.
	// Calls for one Conn never overlap and follow the order of the events:
	// Open first, Close last, each once. ctx ends when the server is forced
	// to stop. With an error, the reply's Lines (the handler's failure
	// reply, if it has one) are still sent; after a failed Open the
	// connection is closed without a Close event.
	DispatchLine(ctx context.Context, c *Conn, ev Event) (Reply, error)
}

// Kind says what an Event is.
type Kind uint8

const (
	// Open: the connection was accepted. No input has been read yet, so
	// the reply is the greeting.
	Open Kind = iota + 1
	// Line: one line of input, without its LF (or CR LF).
	Line
	// TooLong: a line passed Limits.MaxLine. Data holds its first MaxLine
	// bytes; the rest of it, up to its LF, is discarded and the next line
	// is read as usual. The event comes as soon as the limit is passed.
	TooLong
	// Block: the lines a Reply.Collect asked for, up to the terminator.
	Block
	// Close: the session ends; Reason says why. Its reply's Lines are
	// written if the connection still takes output.
	Close
)

func (k Kind) String() string {
	switch k {
	case Open:
		return "open"
	case Line:
		return "line"
	case TooLong:
		return "too_long"
	case Block:
		return "block"
	case Close:
		return "close"
	}
	return "unknown"
}

// Close reasons.
const (
	ReasonClient   = "client closed"     // EOF or a reset from the client
	ReasonIdle     = "idle timeout"      // no input for Limits.IdleTimeout
	ReasonHandler  = "closed by handler" // Reply.Close or Conn.Close
	ReasonShutdown = "shutdown"          // the server is shutting down
	ReasonOverflow = "output overflow"   // the client read too slowly (Limits.MaxOutput)
	ReasonWrite    = "write failed"      // a write failed or passed Limits.WriteTimeout
	ReasonRead     = "read failed"       // any other read error
)

// Event is one event of a connection.
type Event struct {
	Kind Kind
	// Data is the line (Line, TooLong) or the block (Block). A Line with
	// Limits.UTF8 is valid UTF-8: each run of invalid bytes became one
	// U+FFFD. A Block holds its lines as they arrived (telnet negotiation
	// removed, dot-unstuffed when asked), each ending in CR LF, whatever
	// UTF8 says: a message body has its own charset. The server does not
	// reuse Data after the call returns.
	Data []byte
	// Overflow is set on a Block that grew past Collect.MaxBytes: the
	// lines beyond the limit were read and discarded up to the terminator,
	// and Data is empty.
	Overflow bool
	// Size is a Block's length in bytes as it arrived, discarded bytes
	// included.
	Size int64
	// Reason says why a Close event happened (one of the Reason constants).
	Reason string
}

// Reply is a Dispatcher's answer to an event.
type Reply struct {
	// Lines are written in order, each followed by CR LF (with
	// Limits.Telnet, a 0xFF byte in them is doubled).
	Lines [][]byte
	// Close ends the session once Lines are written: input is no longer
	// read, the Close event (ReasonHandler) is dispatched and its lines
	// written, then the connection is closed.
	Close bool
	// Collect, when set, makes the server gather the lines that follow,
	// up to a terminator line, and deliver them as one Block event instead
	// of one Line event each.
	Collect *Collect
}

// Collect asks for the following lines as one Block event.
type Collect struct {
	// Terminator is the line that ends the block (SMTP: "."); it is not
	// part of the block. It must not be empty.
	Terminator string
	// DotUnstuff removes the first '.' of every line that begins with one
	// (RFC 5321 section 4.5.2), after the terminator check.
	DotUnstuff bool
	// MaxBytes bounds the block (0 means DefaultMaxBlock). Lines within a
	// block are bounded by it alone, not by Limits.MaxLine.
	MaxBytes int64
}

// DefaultMaxBlock bounds a Block whose Collect sets no MaxBytes.
const DefaultMaxBlock = 16 << 20

// Errors of Conn.Send.
var (
	// ErrClosed: the connection is closing or closed.
	ErrClosed = errors.New("line: connection closed")
	// ErrOutputFull: the connection's unsent output passed
	// Limits.MaxOutput; the connection is being dropped.
	ErrOutputFull = errors.New("line: output buffer full; connection dropped")
)

// Errors of Server.Detach and Server.Adopt.
var (
	// ErrServerClosed: the server is shutting down or was detached.
	ErrServerClosed = errors.New("line: server closed")
	// ErrBadHandover: a Handover that cannot be served (no file, an id
	// in use, a framer state no framer can be in).
	ErrBadHandover = errors.New("line: bad handover")
)

// Limits bound what a connection may hold. Zero numeric fields mean their
// defaults; SetLimits changes them for live connections too.
type Limits struct {
	MaxLine      int           // bytes in one line, default 4096
	Telnet       bool          // strip IAC sequences from input, refuse option negotiation, double IAC on output
	UTF8         bool          // make Line data valid UTF-8 (see Event.Data)
	IdleTimeout  time.Duration // a connection without input for this long is closed (ReasonIdle), default 5m
	MaxOutput    int           // bytes of unsent output before the connection is dropped, default 1 MiB
	WriteTimeout time.Duration // one write to the client may block this long, default 30s
	// MaxConnections bounds the connections open at once, default 10000:
	// one accepted beyond it is closed at once, before its Open event,
	// and counted in Stats.Refused. Lowering it closes no live connection.
	MaxConnections int
}

// Config configures a Server.
type Config struct {
	Name   string // the listener's name, for logs and Conn.Listener
	Limits Limits
	// NextID numbers connections; the kernel passes one counter for all
	// its listeners, so an id names a connection kernel-wide. nil numbers
	// them from 1 per server.
	NextID func() uint64
	Logger *slog.Logger // nil = slog.Default()
}

// Stats are a Server's counters.
type Stats struct {
	Connections int64 `json:"connections"` // open now
	Accepted    int64 `json:"accepted"`
	Requests    int64 `json:"requests"` // Line, TooLong and Block events dispatched
	Errors      int64 `json:"errors"`   // failed dispatches, overflows, write failures
	Refused     int64 `json:"refused"`  // connections closed at once because MaxConnections were open
}

// Conn is one live connection and its session. The server owns it; its
// exported fields are fixed once the Conn is made, except Holder and Seq.
type Conn struct {
	ID       uint64
	Listener string
	Remote   net.Addr
	Local    net.Addr
	Since    time.Time

	// Holder and Seq belong to the Dispatcher (the kernel records there
	// which plugin instance holds a copy of the state, and numbers the
	// events). The server never reads or writes them; the Dispatcher does
	// so only inside DispatchLine, whose calls for one Conn never overlap.
	Holder uint64
	Seq    uint64

	s  *Server
	nc net.Conn
	rc syscall.RawConn // nil when nc is no syscall.Conn
	f  framer          // owned by the connection's goroutine

	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	flushBy  atomic.Int64 // unix ns bounding the final flush; 0 before it

	smu     sync.Mutex
	state   map[string]string // nil when empty; guarded by smu
	version string            // guarded by smu

	// input is what the connection's goroutine had read and not framed
	// when a Detach stopped it; owned by that goroutine.
	input []byte

	mu       sync.Mutex
	reason   string        // why the session ends (reasonHandover once it is handed over); "" while it goes on; guarded by mu
	dropped  bool          // the socket was closed under the session: no output is taken; guarded by mu
	sealed   bool          // the session is being flushed: no output is taken; guarded by mu
	out      []byte        // output the writer has not taken yet, encoded; guarded by mu
	inflight int           // bytes the writer took and has not written yet; guarded by mu
	writing  chan struct{} // non-nil while a writer goroutine runs, closed when it exits; guarded by mu
	// detaching: a Detach asked for the session; it stops at the next
	// event boundary and is handed over unless a reason ends it first.
	// Guarded by mu.
	detaching bool
	// inEvent: the goroutine is between reading and the answer to an
	// event (framing, dispatching, acting on the reply), not idle or
	// ending. Guarded by mu.
	inEvent bool
	// handing: the output is being flushed for a handover. No writer is
	// started; one that runs out of time puts its unwritten bytes back.
	// Guarded by mu.
	handing bool
}

// Session returns a copy of the connection's state and the version of the
// handler that wrote it last ("" before any). Safe for concurrent use.
func (c *Conn) Session() (state map[string]string, version string) {
	c.smu.Lock()
	defer c.smu.Unlock()
	return maps.Clone(c.state), c.version
}

// SetSession replaces the state. Safe for concurrent use.
func (c *Conn) SetSession(state map[string]string, version string) {
	if len(state) == 0 {
		state = nil
	} else {
		state = maps.Clone(state)
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	c.state, c.version = state, version
}

// UpdateSession sets the keys of set, deletes those of del, and records
// version as the state's writer. Safe for concurrent use.
func (c *Conn) UpdateSession(set map[string]string, del []string, version string) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.state == nil && len(set) > 0 {
		c.state = make(map[string]string, len(set))
	}
	maps.Copy(c.state, set)
	for _, k := range del {
		delete(c.state, k)
	}
	if len(c.state) == 0 {
		c.state = nil
	}
	c.version = version
}

// Send queues b to be written to the client as it is (with Limits.Telnet,
// IAC doubled), after the output queued before it. It never blocks on the
// client. It returns ErrClosed once the connection is closing, and
// ErrOutputFull (dropping the connection) when the unsent output would pass
// Limits.MaxOutput. Safe for concurrent use.
func (c *Conn) Send(b []byte) error {
	return c.output(b, nil, true, true)
}

// Close ends the session as Reply.Close does: output queued so far is
// written, the Close event (ReasonHandler) is dispatched once the event in
// progress, if any, has been answered, then the connection is closed. It
// does not wait. Safe for concurrent use.
func (c *Conn) Close() {
	c.stop(ReasonHandler)
}

// BytesIn and BytesOut count the bytes read from and written to the client.
func (c *Conn) BytesIn() int64  { return c.bytesIn.Load() }
func (c *Conn) BytesOut() int64 { return c.bytesOut.Load() }

// Server serves line connections from a listener.
type Server struct {
	name   string
	log    *slog.Logger
	d      Dispatcher
	nextID func() uint64
	ownIDs bool          // Config.NextID is nil: ids come from lastID
	lastID atomic.Uint64 // for nextID when Config.NextID is nil
	limits atomic.Pointer[Limits]
	bufs   sync.Pool // read buffers (*[]byte of readSize)

	// ctx is given to every DispatchLine; cancel ends it when a Shutdown
	// runs out of time, or has finished.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	lns      map[net.Listener]struct{} // guarded by mu
	conns    map[uint64]*Conn          // every connection whose goroutine runs; guarded by mu
	shutdown bool                      // Shutdown or Detach has begun; guarded by mu
	detached bool                      // it was Detach; guarded by mu
	forced   bool                      // a Shutdown or Detach ran out of time; guarded by mu
	serving  int                       // Serve loops running; guarded by mu
	handed   []Handover                // sessions handed over by Detach, not yet returned; guarded by mu
	done     chan struct{}             // closed when shutdown is set
	idle     chan struct{}             // closed once shutdown is set and conns is empty
	isIdle   bool                      // idle is closed; guarded by mu

	open     atomic.Int64
	accepted atomic.Int64
	requests atomic.Int64
	errors   atomic.Int64
	refused  accept.Refusals
}

// New returns a Server that delivers events to d.
func New(cfg Config, d Dispatcher) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		name:   cfg.Name,
		log:    log.With("listener", cfg.Name, "protocol", "line"),
		d:      d,
		nextID: cfg.NextID,
		ctx:    ctx,
		cancel: cancel,
		lns:    make(map[net.Listener]struct{}),
		conns:  make(map[uint64]*Conn),
		done:   make(chan struct{}),
		idle:   make(chan struct{}),
	}
	if s.nextID == nil {
		s.ownIDs = true
		s.nextID = func() uint64 { return s.lastID.Add(1) }
	}
	s.bufs.New = func() any {
		b := make([]byte, readSize)
		return &b
	}
	s.SetLimits(cfg.Limits)
	return s
}

// Serve accepts connections on ln until Shutdown or Detach, and returns
// nil then; it closes ln. It returns an error when Accept fails for good.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.serving++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.serving--
		s.checkIdleLocked()
		s.mu.Unlock()
		ln.Close()
	}()
	return accept.Loop(ln, fmt.Sprintf("line listener %s", s.name), s.log, s.done, s.isShutdown, func(nc net.Conn) bool {
		c, refused := s.track(nc)
		if refused {
			s.refused.Refuse(nc, s.log, s.limits.Load().MaxConnections)
			return true
		}
		if c == nil {
			// Shutdown has begun (or a Detach ran out of time): this
			// connection fares as one still in the listener's backlog.
			nc.Close()
			return false
		}
		go s.serveConn(c)
		return true
	})
}

// Shutdown stops accepting and ends every session gracefully: the event in
// progress is answered, a Close event (ReasonShutdown) is dispatched, output
// is flushed and the connection closed. When ctx ends first, dispatches in
// progress are cancelled and the connections closed at once; Shutdown
// returns once every connection goroutine has exited, with ctx's error if
// it cut things short. Safe to call before or without Serve, and more than
// once; after a Detach it returns at once. A Shutdown during a Detach ends
// the sessions not yet handed over.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.done)
	}
	for ln := range s.lns {
		ln.Close()
	}
	conns := slices.Collect(maps.Values(s.conns))
	s.checkIdleLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.stop(ReasonShutdown)
	}
	select {
	case <-s.idle:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.forced = true
	conns = slices.Collect(maps.Values(s.conns))
	s.mu.Unlock()
	s.cancel()
	for _, c := range conns {
		c.forceClose()
	}
	<-s.idle
	return fmt.Errorf("line listener %s: shutdown: %w", s.name, ctx.Err())
}

// SetLimits changes the limits, for live connections from their next read
// or write.
func (s *Server) SetLimits(l Limits) {
	l = l.withDefaults()
	s.limits.Store(&l)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections: s.open.Load(),
		Accepted:    s.accepted.Load(),
		Requests:    s.requests.Load(),
		Errors:      s.errors.Load(),
		Refused:     s.refused.Count(),
	}
}

// Refused returns how many connections were closed at once because
// Limits.MaxConnections were open.
func (s *Server) Refused() int64 { return s.refused.Count() }

// Lookup returns the live connection with id, or nil.
func (s *Server) Lookup(id uint64) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[id]
}

// Conns returns the live connections, by id.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	cs := slices.Collect(maps.Values(s.conns))
	s.mu.Unlock()
	slices.SortFunc(cs, func(a, b *Conn) int { return cmp.Compare(a.ID, b.ID) })
	return cs
}
