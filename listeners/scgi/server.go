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
)

// Defaults for a Config's zero values.
const (
	defaultMaxHeader = 64 << 10
	defaultMaxBody   = 10 << 20
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
	// Timeout bounds a connection's request: its header block and body
	// must arrive within Timeout of the accept. It also bounds every write
	// of the answer, so a front server that stops reading is cut off. The
	// handler's own time is the dispatcher's business. 0 means none.
	Timeout time.Duration
	Logger  *slog.Logger // nil = slog.Default()
}

// Stats are a Server's counters.
type Stats struct {
	Connections int64 `json:"connections"` // open now
	Accepted    int64 `json:"accepted"`    // since start
	Requests    int64 `json:"requests"`    // dispatched or refused
	Errors      int64 `json:"errors"`      // malformed requests, failed dispatches, panics
}

// Server is one SCGI listener front end. Its methods are safe for
// concurrent use.
type Server struct {
	name      string
	maxHeader int
	maxBody   int64
	timeout   time.Duration
	log       *slog.Logger
	d         atomic.Pointer[dispatcherRef]

	mu       sync.Mutex
	lns      map[net.Listener]struct{} // guarded by mu
	conns    map[net.Conn]struct{}     // connections being served; guarded by mu
	shutdown bool                      // guarded by mu
	changed  chan struct{}             // a connection ended; buffered 1

	open     atomic.Int64
	accepted atomic.Int64
	requests atomic.Int64
	errors   atomic.Int64
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
		log:       log.With("listener", cfg.Name, "protocol", "scgi"),
		lns:       make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
		changed:   make(chan struct{}, 1),
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
	}
}

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
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isShutdown() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) ||
				!errors.Is(err, net.ErrClosed) && isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("scgi listener %s: %w", s.name, err)
		}
		backoff = 0
		s.accepted.Add(1)
		// A connection accepted while Shutdown begins is served all the
		// same: Shutdown waits for it.
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.open.Add(1)
		go s.serveConn(c)
	}
}

// isTemporary reports errors an accept loop should retry: running out of
// file descriptors or memory.
func isTemporary(err error) bool {
	var errno interface{ Temporary() bool }
	return errors.As(err, &errno) && errno.Temporary()
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// Shutdown stops accepting, then waits until every accepted connection has
// had its answer written, or until ctx ends; then it closes what remains
// and returns ctx's error. It is safe to call before or without Serve, and
// more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	var err error
	done := ctx.Done()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			if err != nil {
				return fmt.Errorf("scgi listener %s: shutdown: %w", s.name, err)
			}
			return nil
		}
		select {
		case <-s.changed:
		case <-done:
			// Close what remains; the connections' goroutines end
			// promptly once their sockets are closed.
			err, done = ctx.Err(), nil
			s.mu.Lock()
			for c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
		}
	}
}

// serveConn answers the one request of c and closes it.
func (s *Server) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.open.Add(-1)
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}()
	remote := c.RemoteAddr().String()
	if s.timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(s.timeout))
	}
	br := bufio.NewReaderSize(c, 4<<10)
	h, err := ReadRequest(br, s.maxHeader)
	if err != nil {
		s.badRequest(c, remote, err)
		return
	}
	s.requests.Add(1)
	r, err := NewRequest(h)
	if err != nil {
		s.badRequest(c, remote, err)
		return
	}
	if r.RemoteAddr == "" {
		r.RemoteAddr = remote
	}
	w := newResponseWriter(c, r, s.timeout)
	if r.ContentLength > s.maxBody {
		s.errors.Add(1)
		s.log.Warn("request body too large", "remote", remote, "content_length", r.ContentLength, "max_body", s.maxBody)
		w.error(http.StatusRequestEntityTooLarge)
		w.finish()
		return
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), http.LocalAddrContextKey, c.LocalAddr()))
	defer cancel()
	watch := &clientWatch{c: c, br: br, cancel: cancel, timeout: s.timeout}
	defer watch.stop()
	if r.ContentLength == 0 {
		r.Body = http.NoBody
		watch.start()
	} else {
		r.Body = &body{r: br, left: r.ContentLength, atEOF: watch.start}
	}
	r = r.WithContext(ctx)
	s.dispatch(w, r)
	w.finish()
}

// badRequest answers a request that could not be read.
func (s *Server) badRequest(c net.Conn, remote string, err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
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
	w.finish()
}

// dispatch hands r to the dispatcher and turns its failures into answers.
func (s *Server) dispatch(w *responseWriter, r *http.Request) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		s.errors.Add(1)
		if v != http.ErrAbortHandler {
			s.log.Error("dispatcher panic", "method", r.Method, "uri", r.RequestURI,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		if v == http.ErrAbortHandler || w.headSent {
			w.abort()
			return
		}
		w.error(http.StatusInternalServerError)
	}()
	ref := s.d.Load()
	if ref.d == nil {
		s.errors.Add(1)
		w.error(http.StatusServiceUnavailable)
		return
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
}

// body is the request body: exactly left more bytes of the connection.
type body struct {
	mu     sync.Mutex // serialises Reads
	r      *bufio.Reader
	left   int64       // guarded by mu
	err    error       // sticky; guarded by mu
	atEOF  func()      // called once the whole body has been read; guarded by mu
	closed atomic.Bool // Close never waits for a Read that blocks
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

// clientWatch notices a front server that closes the connection while the
// answer is being made — how nginx says its client went away — and
// cancels the request's context. It reads only once the body has been read
// whole, so it never competes with the handler for the body.
type clientWatch struct {
	c       net.Conn
	br      *bufio.Reader
	cancel  context.CancelFunc
	timeout time.Duration

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
		if _, err := w.br.ReadByte(); err != nil {
			w.mu.Lock()
			stopped := w.stopped
			w.mu.Unlock()
			if !stopped {
				w.cancel()
			}
		}
		// A byte after the body breaks the protocol; it is ignored.
	}()
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
