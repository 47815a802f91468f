package scgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/accept"
)

// Defaults for a Config's zero values.
const (
	defaultMaxHeader = 64 << 10
	defaultMaxBody   = 10 << 20
)

const (
	// lingerTime bounds how long a connection is drained of input nobody
	// read before it is closed (less when Timeout is shorter).
	lingerTime = 500 * time.Millisecond
	// lingerMax bounds how many bytes a refused request's connection is
	// drained of.
	lingerMax = 64 << 20
)

var (
	// errClientGone is the cause of a request's context cancelled because
	// the front server closed the connection.
	errClientGone = errors.New("scgi: the client closed the connection")
	// errConnDone is the cause of a request's context cancelled because
	// its exchange is over.
	errConnDone = errors.New("scgi: connection closed")
)

// Dispatcher answers requests for a listener. Implementations are safe for
// concurrent use.
type Dispatcher interface {
	// Dispatch writes the answer to r on w. It returns a non-nil error when
	// no answer could be had from the handler behind it (it has then
	// written the protocol's error response if the head was not yet sent);
	// the server counts such requests as errors. It may panic with
	// http.ErrAbortHandler to cut off a response whose head was sent. It
	// must not retain w or r after returning.
	Dispatch(w http.ResponseWriter, r *http.Request) error
}

// Config configures a Server.
type Config struct {
	Name string // listener name, for logs and stats
	// MaxHeaderBytes bounds the header netstring (64 KiB when not positive).
	MaxHeaderBytes int
	// MaxBody bounds CONTENT_LENGTH (10 MiB when not positive); a larger
	// body is answered with Status: 413 without being read.
	MaxBody int64
	// Timeout bounds a connection's traffic, not the handler's work: the
	// whole request, header block and body, must arrive within Timeout of
	// the accept (a read deadline; a client that sends nothing or stalls
	// is closed then, with a log line), and every write of the answer must
	// complete within Timeout of its start (a write deadline per write, so
	// a front server that stops reading is cut off). 0 means none.
	Timeout time.Duration
	// MaxConnections bounds the connections open at once (10000 when not
	// positive): one accepted beyond it is closed at once, unanswered, and
	// counted as refused.
	MaxConnections int
	Logger         *slog.Logger // nil = slog.Default()
}

// Stats are a Server's counters.
type Stats struct {
	Connections int64 `json:"connections"` // open now
	Accepted    int64 `json:"accepted"`    // since start
	Requests    int64 `json:"requests"`    // dispatched, or refused with 413 or 503
	Errors      int64 `json:"errors"`      // failed dispatches, panics, refused, malformed and incomplete requests
	Refused     int64 `json:"refused"`     // connections closed at once because MaxConnections were open
}

// Server is one SCGI listener front end. Its methods are safe for
// concurrent use.
type Server struct {
	name      string
	maxHeader int
	maxBody   int64
	timeout   time.Duration
	maxConns  int
	log       *slog.Logger
	d         atomic.Pointer[dispatcherRef]

	mu       sync.Mutex
	lns      map[net.Listener]struct{} // guarded by mu
	conns    map[*conn]struct{}        // connections being served; guarded by mu
	shutdown bool                      // Shutdown has begun; guarded by mu
	forced   bool                      // a Shutdown's ctx ended and it closed conns; guarded by mu
	idle     chan struct{}             // closed once shutdown is set and conns is empty
	isIdle   bool                      // idle is closed; guarded by mu
	done     chan struct{}             // closed when shutdown is set

	open     atomic.Int64
	accepted atomic.Int64
	requests atomic.Int64
	errors   atomic.Int64
	refused  accept.Refusals
}

// dispatcherRef lets an interface value live behind an atomic.Pointer.
type dispatcherRef struct{ d Dispatcher }

// New returns a Server that dispatches to d. A nil d answers Status: 503
// until SetDispatcher installs one.
func New(cfg Config, d Dispatcher) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		name:      cfg.Name,
		maxHeader: cfg.MaxHeaderBytes,
		maxBody:   cfg.MaxBody,
		timeout:   cfg.Timeout,
		maxConns:  accept.Max(cfg.MaxConnections),
		log:       log.With("listener", cfg.Name, "protocol", "scgi"),
		lns:       make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		idle:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if s.maxHeader <= 0 {
		s.maxHeader = defaultMaxHeader
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	s.d.Store(&dispatcherRef{d})
	return s
}

// SetDispatcher atomically replaces the dispatcher; requests already
// dispatched finish on the old one.
func (s *Server) SetDispatcher(d Dispatcher) { s.d.Store(&dispatcherRef{d}) }

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
// MaxConnections were open.
func (s *Server) Refused() int64 { return s.refused.Count() }

// Serve serves connections accepted from ln until Shutdown, and returns nil
// after a Shutdown. ln is closed by Shutdown, and by Serve when it returns.
// A Serve called after Shutdown closes ln and returns nil at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	return accept.Loop(ln, fmt.Sprintf("scgi listener %s", s.name), s.log, s.done, s.isShutdown, func(c net.Conn) bool {
		cc, refused := s.track(c)
		switch {
		case refused:
			s.refused.Refuse(c, s.log, s.maxConns)
			return true
		case cc == nil:
			// Shutdown has stopped waiting: this connection fares as one
			// still in the listener's backlog.
			c.Close()
			return false
		}
		go s.serveConn(cc)
		return true
	})
}

// track registers an accepted connection, or returns nil when Shutdown no
// longer waits for connections, or reports refused when MaxConnections are
// open. A connection accepted while a Shutdown waits is served all the
// same, and waited for.
func (s *Server) track(c net.Conn) (cc *conn, refused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isIdle || s.forced {
		return nil, false
	}
	if len(s.conns) >= s.maxConns {
		return nil, true
	}
	cc = newConn(c)
	s.conns[cc] = struct{}{}
	s.accepted.Add(1)
	s.open.Add(1)
	return cc, false
}

// untrack forgets a connection that has been closed.
func (s *Server) untrack(cc *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, cc)
	s.open.Add(-1)
	s.checkIdleLocked()
}

// checkIdleLocked closes idle once Shutdown has begun and no connection is
// left.
func (s *Server) checkIdleLocked() {
	if s.shutdown && len(s.conns) == 0 && !s.isIdle {
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

// Shutdown stops accepting (it closes the listeners Serve accepts from),
// then waits until every accepted connection has finished its exchange —
// in SCGI an accepted connection always carries a request in flight — or
// until ctx ends. Then it closes the connections that remain, cancels
// their requests' contexts, waits for their goroutines (a Dispatch must
// return once its request's context is cancelled) and returns ctx's error.
// It is safe to call before, without or concurrently with Serve, and more
// than once, also concurrently.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.done)
	}
	for ln := range s.lns {
		ln.Close()
	}
	s.checkIdleLocked()
	s.mu.Unlock()
	select {
	case <-s.idle:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.forced = true
	for cc := range s.conns {
		cc.forceClose(context.Cause(ctx))
	}
	s.mu.Unlock()
	<-s.idle
	return fmt.Errorf("scgi listener %s: shutdown: %w", s.name, ctx.Err())
}

// conn is one accepted connection, which carries one request.
type conn struct {
	c      net.Conn
	ctx    context.Context // the request's context
	cancel context.CancelCauseFunc
}

func newConn(c net.Conn) *conn {
	ctx, cancel := context.WithCancelCause(context.WithValue(context.Background(), http.LocalAddrContextKey, c.LocalAddr()))
	return &conn{c: c, ctx: ctx, cancel: cancel}
}

// forceClose cuts the connection for a Shutdown whose ctx ended.
func (cc *conn) forceClose(cause error) {
	cc.cancel(fmt.Errorf("scgi: shutdown: %w", cause))
	cc.c.Close()
}

// serveConn answers the one request of cc and closes it.
func (s *Server) serveConn(cc *conn) {
	c := cc.c
	defer func() {
		c.Close()
		cc.cancel(errConnDone)
		s.untrack(cc)
	}()
	remote := c.RemoteAddr().String()
	if s.timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(s.timeout))
	}
	br := bufio.NewReaderSize(c, 4<<10)
	h, err := ReadRequest(br, s.maxHeader)
	var r *http.Request
	if err == nil {
		r, err = NewRequest(h)
	}
	if err != nil {
		s.badRequest(c, br, remote, err)
		return
	}
	s.requests.Add(1)
	if r.RemoteAddr == "" {
		r.RemoteAddr = remote
	}
	w := newResponseWriter(c, r, s.timeout)
	if r.ContentLength > s.maxBody {
		s.errors.Add(1)
		s.log.Warn("request body too large", "remote", remote, "content_length", r.ContentLength, "max_body", s.maxBody)
		w.error(http.StatusRequestEntityTooLarge)
		w.finish()
		s.linger(c, br)
		return
	}
	watch := &clientWatch{c: c, br: br, cancel: cc.cancel}
	defer watch.stop()
	b := &body{r: br, left: r.ContentLength, atEOF: watch.start, cutShort: watch.lost}
	if r.ContentLength == 0 {
		r.Body = http.NoBody
		watch.start()
	} else {
		r.Body = b
	}
	r = r.WithContext(cc.ctx)
	if !s.dispatch(w, r) {
		// Cut off: no lingering, so that the front server sees a reset.
		return
	}
	watch.stop()
	if watch.gone.Load() && !w.wroteHeader {
		// Nobody is left to read an answer; an implicit 200 would be a lie.
		s.log.Debug("client went away", "method", r.Method, "uri", r.RequestURI, "remote", r.RemoteAddr)
		return
	}
	if err := w.finish(); err != nil {
		s.log.Debug("writing the answer failed", "method", r.Method, "uri", r.RequestURI, "remote", r.RemoteAddr, "error", err)
		return
	}
	if b.unread() > 0 {
		// The handler left part of the body unread: closing now would
		// reset the connection under the answer. nginx stops sending the
		// body once it has the answer's head, so end the answer first.
		s.linger(c, br)
	}
}

// lingerTime bounds how long a connection is drained of input nobody read
// before it is closed.
func (s *Server) lingerTime() time.Duration {
	if s.timeout > 0 {
		return min(s.timeout, lingerTime)
	}
	return lingerTime
}

// linger half-closes c once its answer is written, and drains what the
// client still sends until it closes its end too, for a while, so that the
// client reads the answer rather than a reset caused by closing with
// unread input.
func (s *Server) linger(c net.Conn, br *bufio.Reader) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(s.lingerTime()))
	_, _ = io.CopyN(io.Discard, br, lingerMax)
}

// badRequest answers a request that could not be read.
func (s *Server) badRequest(c net.Conn, br *bufio.Reader, remote string, err error) {
	var ne net.Error
	switch {
	case err == io.EOF:
		// A connection closed without a request: a health check.
		s.log.Debug("connection closed without a request", "remote", remote)
		return
	case errors.As(err, &ne) && ne.Timeout():
		s.errors.Add(1)
		s.log.Warn("request not received in time", "remote", remote, "timeout", s.timeout, "error", err)
		return
	case !errors.Is(err, ErrMalformed):
		s.errors.Add(1)
		s.log.Warn("reading the request failed", "remote", remote, "error", err)
		return
	}
	s.errors.Add(1)
	s.log.Warn("malformed request", "remote", remote, "error", err)
	w := newResponseWriter(c, nil, s.timeout)
	w.error(http.StatusBadRequest)
	if w.finish() == nil {
		s.linger(c, br)
	}
}

// dispatch hands r to the dispatcher and turns its failures into answers.
// It reports false when the answer was cut off and the connection reset.
func (s *Server) dispatch(w *responseWriter, r *http.Request) (ok bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		s.errors.Add(1)
		if v != http.ErrAbortHandler {
			s.log.Error("dispatcher panic", "method", r.Method, "uri", r.RequestURI, "remote", r.RemoteAddr,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		if v == http.ErrAbortHandler || w.headSent {
			w.abort()
			ok = false
			return
		}
		w.error(http.StatusInternalServerError)
		ok = true
	}()
	ref := s.d.Load()
	if ref.d == nil {
		s.errors.Add(1)
		w.error(http.StatusServiceUnavailable)
		return true
	}
	if err := ref.d.Dispatch(w, r); err != nil {
		s.errors.Add(1)
		s.log.Debug("dispatch failed", "method", r.Method, "uri", r.RequestURI, "error", err)
		if !w.wroteHeader {
			// The dispatcher broke its promise to answer; never let a
			// failure become an empty 200.
			w.error(http.StatusBadGateway)
		}
	}
	return true
}

// body is the request body: exactly left more bytes of the connection.
type body struct {
	mu    sync.Mutex // serialises Reads
	r     *bufio.Reader
	left  int64  // guarded by mu
	err   error  // sticky; guarded by mu
	atEOF func() // called once the whole body has been read; guarded by mu
	// cutShort is called when the connection ends before the body: the
	// front server has gone.
	cutShort func()
	closed   atomic.Bool // Close never waits for a Read that blocks
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.finish()
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		b.finish()
		return n, io.EOF
	case errors.Is(err, io.EOF):
		b.err = fmt.Errorf("scgi: body ended %d bytes short: %w", b.left, io.ErrUnexpectedEOF)
		if b.cutShort != nil {
			b.cutShort()
		}
		return n, b.err
	case err != nil:
		b.err = err
	}
	return n, err
}

func (b *body) finish() {
	if b.atEOF != nil {
		b.atEOF()
		b.atEOF = nil
	}
}

func (b *body) Close() error {
	b.closed.Store(true)
	return nil
}

// unread returns how much of the body is left in the connection. It is for
// after the handler returned, when no Read can be running.
func (b *body) unread() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0
	}
	return b.left
}

// clientWatch notices a front server that closes the connection while the
// answer is being made — how nginx says its client went away — and
// cancels the request's context. It reads only once the body has been read
// whole, so it never competes with the handler for the body.
type clientWatch struct {
	c      net.Conn
	br     *bufio.Reader
	cancel context.CancelCauseFunc
	gone   atomic.Bool // the client closed the connection

	mu      sync.Mutex
	running bool
	stopped bool
	done    chan struct{}
}

func (w *clientWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running || w.stopped {
		return
	}
	w.running = true
	w.done = make(chan struct{})
	// The request is in; what the handler takes is its own business.
	_ = w.c.SetReadDeadline(time.Time{})
	go func() {
		defer close(w.done)
		// A deadline (stop's, or one the handler set) is not the client
		// going; a byte after the body breaks the protocol but is ignored.
		if _, err := w.br.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			w.lost()
		}
	}()
}

// lost records that the client closed the connection, and cancels the
// request.
func (w *clientWatch) lost() {
	w.gone.Store(true)
	w.cancel(errClientGone)
}

// stop ends the watch and waits for its goroutine.
func (w *clientWatch) stop() {
	w.mu.Lock()
	w.stopped = true
	running := w.running
	w.mu.Unlock()
	if running {
		_ = w.c.SetReadDeadline(time.Now())
		<-w.done
	}
}
