package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/accept"
	"github.com/switchyard-dev/switchyard/internal/loglimit"
	"github.com/switchyard-dev/switchyard/internal/workpool"
)

// Dispatcher answers DNS queries for a listener. Implementations are safe
// for concurrent use.
type Dispatcher interface {
	// DispatchDNS returns the answer to q in wire format, or an error when
	// none could be had (the server then answers SERVFAIL). ctx ends when
	// the server shuts down.
	DispatchDNS(ctx context.Context, q Query) ([]byte, error)
}

// Query is one DNS query as it arrived.
type Query struct {
	Msg       []byte // wire format
	Remote    net.Addr
	Local     net.Addr
	Transport string // "udp" or "tcp"
}

// Config configures a Server.
type Config struct {
	Name string // listener name, for logs and stats
	// MaxInFlight bounds the queries being answered at once (default
	// 1024); a query beyond it is answered SERVFAIL at once rather than
	// queued, since miekg/dns starts a goroutine per UDP datagram.
	MaxInFlight int
	// TCPIdleTimeout closes a TCP connection that sends no query for this
	// long (default 10s).
	TCPIdleTimeout time.Duration
	// MaxConnections bounds the TCP connections open at once (10000 when
	// not positive): one accepted beyond it is closed at once and counted
	// as refused.
	MaxConnections int
	Logger         *slog.Logger // nil = slog.Default()
}

// Stats are a Server's counters.
type Stats struct {
	Connections int64 `json:"connections"` // TCP connections open now
	Accepted    int64 `json:"accepted"`    // TCP connections since start
	Requests    int64 `json:"requests"`    // queries answered or refused
	Errors      int64 `json:"errors"`      // SERVFAIL answers for failures, bad answers, overload
	Refused     int64 `json:"refused"`     // TCP connections closed at once because MaxConnections were open
}

// Server serves DNS on a UDP socket and a TCP listener.
type Server struct {
	name     string
	log      *slog.Logger
	queryLog *slog.Logger // log for one query's failure, rate-limited
	d        Dispatcher
	slots    chan struct{} // in-flight queries
	idle     time.Duration
	maxConns int
	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex
	servers  []*half        // guarded by mu
	shutdown bool           // guarded by mu
	active   int            // handlers running; guarded by mu
	left     chan struct{}  // a handler returned; buffered 1
	workers  *workpool.Pool // where UDP queries are answered

	conns    atomic.Int64
	accepted atomic.Int64
	requests atomic.Int64
	errors   atomic.Int64
	refused  accept.Refusals
}

// New returns a Server that answers with d.
func New(cfg Config, d Dispatcher) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.TCPIdleTimeout <= 0 {
		cfg.TCPIdleTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	log = log.With("listener", cfg.Name, "protocol", "dns")
	return &Server{
		name:     cfg.Name,
		log:      log,
		queryLog: loglimit.Logger(log, loglimit.New(100, 1000), "query failures over the log's rate limit: records dropped"),
		d:        d,
		slots:    make(chan struct{}, cfg.MaxInFlight),
		left:     make(chan struct{}, 1),
		workers:  workpool.New(),
		idle:     cfg.TCPIdleTimeout,
		maxConns: accept.Max(cfg.MaxConnections),
		ctx:      ctx,
		cancel:   cancel,
	}
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Connections: s.conns.Load(), Accepted: s.accepted.Load(), Requests: s.requests.Load(), Errors: s.errors.Load(),
		Refused: s.refused.Count()}
}

// Refused returns how many TCP connections were closed at once because
// MaxConnections were open.
func (s *Server) Refused() int64 { return s.refused.Count() }

// Serve answers queries on pc (UDP) and ln (TCP) until Shutdown, which
// closes both, and returns nil then. Either may be nil.
func (s *Server) Serve(pc net.PacketConn, ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		if pc != nil {
			pc.Close()
		}
		if ln != nil {
			ln.Close()
		}
		return nil
	}
	var halves []*half
	if pc != nil {
		// miekg/dns closes its PacketConn once its UDP handlers have
		// returned, but ours hand the query to a worker and return at
		// once: the socket stays open until Shutdown has waited for the
		// workers' answers.
		h := newHalf(&mdns.Server{PacketConn: keepOpen{pc}, Handler: s.handler("udp"), UDPSize: 4096})
		h.pc = pc
		halves = append(halves, h)
	}
	if ln != nil {
		halves = append(halves, newHalf(&mdns.Server{
			Listener:    &countingListener{Listener: ln, s: s},
			Handler:     s.handler("tcp"),
			IdleTimeout: func() time.Duration { return s.idle },
			ReadTimeout: s.idle,
		}))
	}
	s.servers = append(s.servers, halves...)
	errs := make(chan error, len(halves))
	for _, h := range halves {
		go func() {
			defer close(h.exited)
			errs <- h.srv.ActivateAndServe()
		}()
	}
	s.mu.Unlock()
	var first error
	for range halves {
		if err := <-errs; err != nil && first == nil && !s.isShutdown() {
			first = err
			// One half failed: stop the other rather than serve half.
			s.Shutdown(context.Background())
		}
	}
	if first != nil {
		return fmt.Errorf("dns listener %s: %w", s.name, first)
	}
	return nil
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// Shutdown stops both servers (closing their sockets) and waits for the
// queries being answered, until ctx ends, when it cancels them. It is safe
// to call before or without Serve, and more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	srvs := s.servers
	s.servers = nil
	s.mu.Unlock()
	var errs []error
	for _, h := range srvs {
		// A server that has not started yet cannot be shut down: wait
		// until it has, or has failed to.
		select {
		case <-h.started:
		case <-h.exited:
			continue
		}
		if err := h.srv.ShutdownContext(ctx); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
		<-h.exited
	}
	// miekg/dns does not wait for the handlers of UDP queries: wait for
	// them here, and cancel what ctx does not leave time for.
	for s.activeCount() > 0 {
		select {
		case <-s.left:
		case <-ctx.Done():
			s.cancel()
			errs = append(errs, ctx.Err())
			for s.activeCount() > 0 {
				<-s.left
			}
		}
	}
	s.cancel()
	s.workers.Stop()
	for _, h := range srvs {
		if h.pc != nil {
			h.pc.Close()
		}
	}
	return errors.Join(errs...)
}

func (s *Server) activeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// enter counts a handler in, unless the server has shut down.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown && s.servers == nil && s.ctx.Err() != nil {
		return false
	}
	s.active++
	return true
}

func (s *Server) leave() {
	s.mu.Lock()
	s.active--
	s.mu.Unlock()
	select {
	case s.left <- struct{}{}:
	default:
	}
}

// half is one of the two miekg/dns servers.
type half struct {
	srv     *mdns.Server
	pc      net.PacketConn // the UDP socket, which Shutdown closes; nil for TCP
	started chan struct{}  // closed once it serves
	exited  chan struct{}  // closed when ActivateAndServe has returned
}

// keepOpen is a PacketConn whose Close does nothing: Shutdown closes the
// socket itself, after the last answer.
type keepOpen struct{ net.PacketConn }

func (keepOpen) Close() error { return nil }

func newHalf(srv *mdns.Server) *half {
	h := &half{srv: srv, started: make(chan struct{}), exited: make(chan struct{})}
	srv.NotifyStartedFunc = func() { close(h.started) }
	return h
}

// handler answers one query arriving over transport. miekg/dns calls it
// on a fresh goroutine per UDP packet, whose small stack the kernel's call
// path would grow for every query (16% of the kernel's CPU under dnsperf):
// a UDP query is answered on a pool worker instead, and the packet's
// goroutine returns at once (miekg/dns does nothing with a UDP
// ResponseWriter after its handler). A TCP query is answered in place,
// since miekg/dns reads the connection's next query, or closes it, when the
// handler returns.
func (s *Server) handler(transport string) mdns.Handler {
	return mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		if !s.enter() {
			return
		}
		if transport == "udp" {
			s.workers.Run(func() { s.serve(w, req, transport) })
			return
		}
		s.serve(w, req, transport)
	})
}

// serve answers one query; the caller has entered, and serve leaves.
func (s *Server) serve(w mdns.ResponseWriter, req *mdns.Msg, transport string) {
	defer s.leave()
	defer func() {
		// miekg/dns does not recover a handler's panic: the whole
		// kernel would go down with a dispatcher's bug.
		if p := recover(); p != nil {
			s.errors.Add(1)
			s.log.Error("dispatcher panic", "question", question(req), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			s.servfail(w, req)
		}
	}()
	s.requests.Add(1)
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.errors.Add(1)
		s.servfail(w, req)
		return
	}
	raw, ans, err := s.answer(w, req, transport)
	if err != nil {
		s.errors.Add(1)
		s.queryLog.Warn("query failed", "remote", w.RemoteAddr().String(), "transport", transport,
			"question", question(req), "error", err)
		s.servfail(w, req)
		return
	}
	if raw != nil {
		_, err = w.Write(raw)
	} else {
		err = w.WriteMsg(ans)
	}
	if err != nil {
		s.log.Debug("writing the answer", "remote", w.RemoteAddr().String(), "error", err)
	}
}

// answer asks the dispatcher and checks what comes back. An answer that
// passes quickCheck and fits is returned as the plugin's wire bytes, raw;
// any other is unpacked, checked whole and truncated to fit, as ans.
func (s *Server) answer(w mdns.ResponseWriter, req *mdns.Msg, transport string) (raw []byte, ans *mdns.Msg, err error) {
	wire, err := req.Pack()
	if err != nil {
		return nil, nil, fmt.Errorf("packing the query: %w", err)
	}
	b, err := s.d.DispatchDNS(s.ctx, Query{Msg: wire, Remote: w.RemoteAddr(), Local: w.LocalAddr(), Transport: transport})
	if err != nil {
		return nil, nil, err
	}
	if len(b) == 0 {
		return nil, nil, errors.New("the handler wrote no answer")
	}
	size := mdns.MaxMsgSize
	if transport == "udp" {
		size = mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), mdns.MinMsgSize)
		}
	}
	if len(b) <= size && quickCheck(wire, b) {
		return b, nil, nil
	}
	ans = new(mdns.Msg)
	if err := ans.Unpack(b); err != nil {
		return nil, nil, fmt.Errorf("unpacking the answer: %w", err)
	}
	if err := Check(req, ans); err != nil {
		return nil, nil, err
	}
	if transport == "udp" {
		ans.Truncate(size)
	}
	return nil, ans, nil
}

// quickCheck reports, without unpacking, whether ans is certainly a fit
// answer to the packed query q (Check's rules): a response with q's id and
// opcode whose question section is byte for byte q's, and which unpacks.
// False means only that the full check must decide.
func quickCheck(q, ans []byte) bool {
	const hdr = 12
	if len(q) < hdr || len(ans) < hdr {
		return false
	}
	qd := int(q[4])<<8 | int(q[5])
	switch {
	case ans[0] != q[0] || ans[1] != q[1]: // id
		return false
	case ans[2]&0x80 == 0: // QR: a response
		return false
	case ans[2]&0x78 != q[2]&0x78: // opcode
		return false
	case ans[4] != q[4] || ans[5] != q[5]: // question count
		return false
	}
	// The query's question section: it is packed first, so it holds no
	// compression pointer, and the same bytes in the answer mean the same
	// questions.
	off := hdr
	for range qd {
		for off < len(q) && q[off] != 0 {
			if q[off]&0xC0 != 0 {
				return false
			}
			off += int(q[off]) + 1
		}
		off += 1 + 4 // the root label, type and class
	}
	if off > len(q) || off > len(ans) || string(q[hdr:off]) != string(ans[hdr:off]) {
		return false
	}
	// What follows must unpack: a client is never sent a malformed answer.
	var m mdns.Msg
	return m.Unpack(ans) == nil
}

// Check reports whether ans may be sent as the answer to q: it must be a
// response with q's id, opcode and question.
func Check(q, ans *mdns.Msg) error {
	switch {
	case !ans.Response:
		return errors.New("the answer is not a response")
	case ans.Id != q.Id:
		return fmt.Errorf("the answer's id %d is not the query's %d", ans.Id, q.Id)
	case ans.Opcode != q.Opcode:
		return fmt.Errorf("the answer's opcode %d is not the query's %d", ans.Opcode, q.Opcode)
	case len(ans.Question) != len(q.Question):
		return fmt.Errorf("the answer has %d questions, the query %d", len(ans.Question), len(q.Question))
	}
	for i := range q.Question {
		a, b := ans.Question[i], q.Question[i]
		if a.Qtype != b.Qtype || a.Qclass != b.Qclass || !equalNames(a.Name, b.Name) {
			return fmt.Errorf("the answer's question %v is not the query's %v", a.String(), b.String())
		}
	}
	return nil
}

func equalNames(a, b string) bool { return mdns.CanonicalName(a) == mdns.CanonicalName(b) }

func (s *Server) servfail(w mdns.ResponseWriter, req *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	_ = w.WriteMsg(m)
}

func question(m *mdns.Msg) string {
	if len(m.Question) == 0 {
		return ""
	}
	return m.Question[0].String()
}

// countingListener counts TCP connections, and closes at once those
// accepted while MaxConnections are open.
type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.conns.Add(1) <= int64(l.s.maxConns) {
			l.s.accepted.Add(1)
			return &countedConn{Conn: c, s: l.s}, nil
		}
		l.s.conns.Add(-1)
		l.s.refused.Refuse(c, l.s.log, l.s.maxConns)
	}
}

type countedConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.s.conns.Add(-1) })
	return c.Conn.Close()
}
