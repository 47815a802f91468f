package http

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	nethttp "net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/accept"
)

// defaultMaxBody is the request body limit used when Config.MaxBody is not positive.
const defaultMaxBody = 10 << 20

// Dispatcher answers requests for a listener. Implementations are safe for concurrent use.
type Dispatcher interface {
	// Dispatch writes the answer to r on w. It returns a non-nil error when no answer could be had from the
	// handler behind it (the dispatcher has already written the protocol's error response if the head was not
	// yet sent); the server counts such requests as errors. It must not retain w or r after returning.
	Dispatch(w nethttp.ResponseWriter, r *nethttp.Request) error
}

// Config configures a Server. Zero durations mean what they mean for net/http.Server.
type Config struct {
	Name              string        // listener name, for logs and stats
	MaxBody           int64         // request body limit in bytes (>0; a non-positive value means 10 MiB)
	MaxHeaderBytes    int           // 0 = net/http's default (1 MiB)
	ReadHeaderTimeout time.Duration // 0 = ReadTimeout
	ReadTimeout       time.Duration // whole request including body; 0 = none
	IdleTimeout       time.Duration // 0 = ReadTimeout
	// WriteTimeout bounds the writing of a response, from the end of its
	// request's header: a client that stops reading is cut off then. 0 = none.
	WriteTimeout time.Duration
	// MaxConnections bounds the connections open at once (10000 when not
	// positive): one accepted beyond it is closed at once and counted as
	// refused.
	MaxConnections int
	Logger         *slog.Logger // nil = slog.Default()
}

// Server is one HTTP/1.1 listener front end around a net/http.Server.
// Its methods are safe for concurrent use.
type Server struct {
	name     string
	maxBody  int64
	maxConns int
	log      *slog.Logger
	srv      *nethttp.Server

	d atomic.Pointer[dispatcherRef]

	conns    atomic.Int64
	accepted atomic.Int64
	requests atomic.Int64
	errors   atomic.Int64
	refused  accept.Refusals
}

// dispatcherRef lets an interface value live behind an atomic.Pointer.
type dispatcherRef struct{ d Dispatcher }

// Stats are a Server's counters.
type Stats struct {
	Connections int64 `json:"connections"` // open now
	Accepted    int64 `json:"accepted"`    // since start
	Requests    int64 `json:"requests"`
	Errors      int64 `json:"errors"`  // dispatches that returned an error or panicked, plus requests the server itself refused (413, 505)
	Refused     int64 `json:"refused"` // connections closed at once because MaxConnections were open
}

// New returns a Server that dispatches to d. A nil d answers 503 until SetDispatcher installs one.
func New(cfg Config, d Dispatcher) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("listener", cfg.Name, "protocol", "http")
	s := &Server{
		name:     cfg.Name,
		maxBody:  cfg.MaxBody,
		maxConns: accept.Max(cfg.MaxConnections),
		log:      log,
	}
	if s.maxBody <= 0 {
		s.maxBody = defaultMaxBody
	}
	s.d.Store(&dispatcherRef{d})

	var protos nethttp.Protocols
	protos.SetHTTP1(true)
	s.srv = &nethttp.Server{
		Handler:           nethttp.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         s.connState,
		Protocols:         &protos,
		// A non-nil, empty map keeps Serve from configuring HTTP/2 for TLS connections.
		TLSNextProto: map[string]func(*nethttp.Server, *tls.Conn, nethttp.Handler){},
	}
	return s
}

// Serve serves connections accepted from ln until Shutdown; it returns nil after a Shutdown (not ErrServerClosed).
// The listener ln is closed by Shutdown, and by Serve itself when it returns.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(&limitListener{Listener: ln, s: s})
	if errors.Is(err, nethttp.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("http listener %s: %w", s.name, err)
}

// SetDispatcher atomically replaces the dispatcher; requests already dispatched finish on the old one.
func (s *Server) SetDispatcher(d Dispatcher) {
	s.d.Store(&dispatcherRef{d})
}

// Shutdown stops accepting, closes idle keep-alive connections, waits for requests in flight until ctx ends, then
// closes what remains and returns ctx's error. Dispatch calls still running on connections closed that way are not
// waited for; their request contexts are cancelled. Shutdown is safe to call before or without Serve, and more than
// once.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil && ctx.Err() != nil {
		s.srv.Close()
		return fmt.Errorf("http listener %s: shutdown: %w", s.name, err)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("http listener %s: shutdown: %w", s.name, err)
	}
	return nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections: s.conns.Load(),
		Accepted:    s.accepted.Load(),
		Requests:    s.requests.Load(),
		Errors:      s.errors.Load(),
		Refused:     s.refused.Count(),
	}
}

// Refused returns how many connections were closed at once because
// MaxConnections were open.
func (s *Server) Refused() int64 { return s.refused.Count() }

// limitListener closes, at once, the connections accepted while the server
// has MaxConnections open. A connection it returns holds its place in
// s.conns until net/http reports it closed or hijacked: net/http sets
// StateNew on every connection Accept returns, and ends each in StateClosed
// or StateHijacked.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.conns.Add(1) <= int64(l.s.maxConns) {
			return c, nil
		}
		l.s.conns.Add(-1)
		l.s.refused.Refuse(c, l.s.log, l.s.maxConns)
	}
}

func (s *Server) connState(_ net.Conn, state nethttp.ConnState) {
	switch state {
	case nethttp.StateNew:
		s.accepted.Add(1) // counted open by limitListener
	case nethttp.StateHijacked, nethttp.StateClosed:
		s.conns.Add(-1)
	}
}

// refuse answers with code and closes the connection, counting the request as an error.
func (s *Server) refuse(w nethttp.ResponseWriter, code int) {
	s.errors.Add(1)
	w.Header().Set("Connection", "close")
	nethttp.Error(w, nethttp.StatusText(code), code)
}

func (s *Server) serveHTTP(w nethttp.ResponseWriter, r *nethttp.Request) {
	s.requests.Add(1)
	if r.ProtoMajor != 1 {
		// net/http passes the HTTP/2 connection preface ("PRI * HTTP/2.0") to handlers.
		s.refuse(w, nethttp.StatusHTTPVersionNotSupported)
		return
	}
	if r.ContentLength > s.maxBody {
		// The body is left unread: net/http discards a small one, and for a large one half-closes and
		// pauses before closing, so the client can read the answer before any reset.
		s.refuse(w, nethttp.StatusRequestEntityTooLarge)
		return
	}
	ref := s.d.Load()
	if ref.d == nil {
		s.errors.Add(1)
		nethttp.Error(w, "no handler", nethttp.StatusServiceUnavailable)
		return
	}
	dropH2CUpgrade(r.Header)

	req := r
	if r.Body != nil && r.Body != nethttp.NoBody {
		// Dispatch a shallow copy so the server's own request keeps its original body, which net/http
		// inspects after the handler returns to decide whether the connection can be reused. MaxBytesReader
		// gets net/http's writer so an overrun also marks the connection for closing.
		req = new(nethttp.Request)
		*req = *r
		req.Body = nethttp.MaxBytesReader(w, r.Body, s.maxBody)
	}
	tw := &trackingWriter{ResponseWriter: w}
	defer s.recoverDispatch(tw, req)
	err := ref.d.Dispatch(tw, req)
	if err == nil && !tw.sent && r.Context().Err() != nil {
		// The connection failed before an answer came (the client went away, half-closed it, or stalled past
		// ReadTimeout; net/http cancels the request's context then) and the dispatcher gave up: cut the
		// connection rather than let net/http answer an empty 200.
		s.log.Debug("connection lost before an answer", "method", req.Method, "path", req.URL.Path, "remote", req.RemoteAddr,
			"cause", context.Cause(r.Context()))
		panic(nethttp.ErrAbortHandler)
	}
	if err != nil {
		s.errors.Add(1)
		s.log.Debug("dispatch failed", "method", req.Method, "path", req.URL.Path, "remote", req.RemoteAddr, "err", err)
		if !tw.sent {
			// The dispatcher broke its promise to answer; never let a failure become an empty 200.
			clear(w.Header())
			nethttp.Error(w, nethttp.StatusText(nethttp.StatusBadGateway), nethttp.StatusBadGateway)
		}
	}
}

// recoverDispatch turns a panic in a Dispatcher into a 500, or into a cut connection when the head was sent.
// http.ErrAbortHandler passes through so net/http aborts the connection without logging.
func (s *Server) recoverDispatch(tw *trackingWriter, r *nethttp.Request) {
	v := recover()
	if v == nil {
		return
	}
	s.errors.Add(1)
	if v == nethttp.ErrAbortHandler {
		panic(v)
	}
	s.log.Error("dispatcher panic", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
		"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	if tw.sent {
		panic(nethttp.ErrAbortHandler)
	}
	clear(tw.ResponseWriter.Header())
	nethttp.Error(tw.ResponseWriter, nethttp.StatusText(nethttp.StatusInternalServerError), nethttp.StatusInternalServerError)
}

// dropH2CUpgrade removes an HTTP/2 cleartext upgrade offer, which this server declines by ignoring it.
func dropH2CUpgrade(h nethttp.Header) {
	ups := h.Values("Upgrade")
	if len(ups) == 0 {
		return
	}
	var keep []string
	for _, v := range ups {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok != "" && !strings.EqualFold(tok, "h2c") {
				keep = append(keep, tok)
			}
		}
	}
	h.Del("HTTP2-Settings")
	if len(keep) == 0 {
		h.Del("Upgrade")
		return
	}
	h["Upgrade"] = []string{strings.Join(keep, ", ")}
}

// trackingWriter records whether the response head has been committed. It exposes Flush, and Unwrap for
// http.ResponseController; it is used from the dispatching goroutine only.
type trackingWriter struct {
	nethttp.ResponseWriter
	sent bool // a final status line has been written or is committed to be
}

func (w *trackingWriter) WriteHeader(code int) {
	// 1xx heads other than 101 are informational; a final status may still follow.
	if code < 100 || code > 199 || code == nethttp.StatusSwitchingProtocols {
		w.sent = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(p []byte) (int, error) {
	w.sent = true
	return w.ResponseWriter.Write(p)
}

func (w *trackingWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *trackingWriter) FlushError() error {
	w.sent = true
	return nethttp.NewResponseController(w.ResponseWriter).Flush()
}

func (w *trackingWriter) Unwrap() nethttp.ResponseWriter { return w.ResponseWriter }
