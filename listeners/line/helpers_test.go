package line

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// testTimeout bounds every wait of a test, so that a bug fails it rather
// than hangs it. No test measures time against it.
const testTimeout = 10 * time.Second

// fakeDispatcher records the events of every connection, checks the
// dispatch contract (Open first, Close last, never two at once for one
// Conn) and answers with fn, or with echo when fn is nil.
type fakeDispatcher struct {
	fn func(ctx context.Context, c *Conn, ev Event) (Reply, error)

	mu     sync.Mutex
	events map[uint64][]Event // guarded by mu
	busy   map[uint64]bool    // guarded by mu
	// adopted are the sessions the server adopts: they begin without
	// Open, and an Open is a violation. Guarded by mu.
	adopted map[uint64]bool
	broken  []string        // contract violations; guarded by mu
	closes  chan closeEvent // every Close event, once dispatched
}

type closeEvent struct {
	id     uint64
	reason string
}

func newDispatcher(fn func(ctx context.Context, c *Conn, ev Event) (Reply, error)) *fakeDispatcher {
	return &fakeDispatcher{fn: fn, events: make(map[uint64][]Event), busy: make(map[uint64]bool), adopted: make(map[uint64]bool), closes: make(chan closeEvent, 1024)}
}

// adopting says the session id is to be adopted, not opened.
func (d *fakeDispatcher) adopting(id uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.adopted[id] = true
}

func (d *fakeDispatcher) DispatchLine(ctx context.Context, c *Conn, ev Event) (Reply, error) {
	d.mu.Lock()
	evs := d.events[c.ID]
	switch {
	case d.busy[c.ID]:
		d.broken = append(d.broken, fmt.Sprintf("conn %d: %v while another event is dispatched", c.ID, ev.Kind))
	case d.adopted[c.ID] && ev.Kind == Open:
		d.broken = append(d.broken, fmt.Sprintf("conn %d: Open of an adopted session", c.ID))
	case len(evs) == 0 && ev.Kind != Open && !d.adopted[c.ID]:
		d.broken = append(d.broken, fmt.Sprintf("conn %d: %v before Open", c.ID, ev.Kind))
	case len(evs) > 0 && ev.Kind == Open:
		d.broken = append(d.broken, fmt.Sprintf("conn %d: a second Open", c.ID))
	case len(evs) > 0 && evs[len(evs)-1].Kind == Close:
		d.broken = append(d.broken, fmt.Sprintf("conn %d: %v after Close", c.ID, ev.Kind))
	}
	d.busy[c.ID] = true
	d.events[c.ID] = append(evs, ev)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.busy[c.ID] = false
		d.mu.Unlock()
		if ev.Kind == Close {
			d.closes <- closeEvent{c.ID, ev.Reason}
		}
	}()
	if d.fn != nil {
		return d.fn(ctx, c, ev)
	}
	return echo(ctx, c, ev)
}

// echo greets with the connection's id, echoes lines, closes on "quit",
// collects a block after "data" and says goodbye with the close reason.
func echo(_ context.Context, c *Conn, ev Event) (Reply, error) {
	switch ev.Kind {
	case Open:
		return lines("hello " + strconv.FormatUint(c.ID, 10)), nil
	case Line:
		switch string(ev.Data) {
		case "quit":
			r := lines("bye")
			r.Close = true
			return r, nil
		case "data":
			r := lines("354 go ahead")
			r.Collect = &Collect{Terminator: ".", DotUnstuff: true, MaxBytes: 64}
			return r, nil
		}
		return lines("echo: " + string(ev.Data)), nil
	case TooLong:
		return lines("too long: " + string(ev.Data)), nil
	case Block:
		return lines(fmt.Sprintf("block %q size=%d overflow=%v", ev.Data, ev.Size, ev.Overflow)), nil
	case Close:
		return lines("closing: " + ev.Reason), nil
	}
	return Reply{}, fmt.Errorf("unknown event %v", ev.Kind)
}

func lines(ls ...string) Reply {
	var r Reply
	for _, l := range ls {
		r.Lines = append(r.Lines, []byte(l))
	}
	return r
}

// kinds returns the kinds of the events of connection id so far.
func (d *fakeDispatcher) kinds(id uint64) []Kind {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ks []Kind
	for _, ev := range d.events[id] {
		ks = append(ks, ev.Kind)
	}
	return ks
}

func (d *fakeDispatcher) eventsOf(id uint64) []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Event(nil), d.events[id]...)
}

// waitClose waits for the Close event of connection id and returns its
// reason. Close events of other connections are kept for later calls.
func (d *fakeDispatcher) waitClose(t testing.TB, id uint64) string {
	t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	var others []closeEvent
	defer func() {
		for _, o := range others {
			d.closes <- o
		}
	}()
	for {
		select {
		case ce := <-d.closes:
			if ce.id == id {
				return ce.reason
			}
			others = append(others, ce)
		case <-timer.C:
			t.Fatalf("no Close event for conn %d", id)
			return ""
		}
	}
}

// check fails t on any violation of the dispatch contract seen so far.
func (d *fakeDispatcher) check(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range d.broken {
		t.Error(b)
	}
}

// testServer is a Server serving one listener, shut down when the test
// ends.
type testServer struct {
	*Server
	d       *fakeDispatcher
	network string
	addr    string
	logs    *testutil.LogRecorder
	served  chan error
	stopped bool // the test shut the server down itself
}

func startServer(t testing.TB, network string, cfg Config, d *fakeDispatcher) *testServer {
	t.Helper()
	testutil.CheckGoroutines(t)
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = testutil.ShortDir(t) + "/l.sock"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, cfg, d)
}

// serveOn serves ln; the caller has called CheckGoroutines.
func serveOn(t testing.TB, ln net.Listener, cfg Config, d *fakeDispatcher) *testServer {
	t.Helper()
	logs := &testutil.LogRecorder{}
	cfg.Logger = slog.New(logs)
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	ts := &testServer{Server: New(cfg, d), d: d, network: ln.Addr().Network(), addr: ln.Addr().String(), logs: logs, served: make(chan error, 1)}
	go func() { ts.served <- ts.Serve(ln) }()
	t.Cleanup(func() {
		if !ts.stopped {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := ts.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}
		select {
		case err := <-ts.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return after Shutdown")
		}
		d.check(t)
		if t.Failed() {
			for _, r := range logs.Find("") {
				t.Logf("log: %s %s %v", r.Level, r.Message, r.Attrs)
			}
		}
	})
	return ts
}

// shutdown shuts ts down with ctx, for a test that checks the outcome.
func (ts *testServer) shutdown(ctx context.Context) error {
	ts.stopped = true
	return ts.Shutdown(ctx)
}

// client is a test's end of a connection.
type client struct {
	t  testing.TB
	c  net.Conn
	r  *bufio.Reader
	id uint64 // from the greeting
}

// dial connects and reads the echo greeting.
func (ts *testServer) dial(t testing.TB) *client {
	t.Helper()
	cl := ts.connect(t)
	g := cl.line()
	id, err := strconv.ParseUint(strings.TrimPrefix(g, "hello "), 10, 64)
	if err != nil {
		t.Fatalf("greeting %q", g)
	}
	cl.id = id
	return cl
}

// connect connects without reading anything.
func (ts *testServer) connect(t testing.TB) *client {
	t.Helper()
	c, err := net.Dial(ts.network, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, c)
}

func newClient(t testing.TB, c net.Conn) *client {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (cl *client) send(s string) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// line reads a line and returns it without its CR LF.
func (cl *client) line() string {
	cl.t.Helper()
	s, err := cl.r.ReadString('\n')
	if err != nil {
		cl.t.Fatalf("read: %v (after %q)", err, s)
	}
	if !strings.HasSuffix(s, "\r\n") {
		cl.t.Fatalf("line %q does not end in CR LF", s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// expect reads lines and fails unless they are want.
func (cl *client) expect(want ...string) {
	cl.t.Helper()
	for _, w := range want {
		if got := cl.line(); got != w {
			cl.t.Fatalf("read %q, want %q", got, w)
		}
	}
}

// expectEOF fails unless the server closes the connection with nothing
// more to read.
func (cl *client) expectEOF() {
	cl.t.Helper()
	b, err := io.ReadAll(cl.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		cl.t.Fatalf("reading to EOF: %v", err)
	}
	if len(b) > 0 {
		cl.t.Fatalf("read %q, want EOF", b)
	}
	cl.c.Close()
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// pipeListener is a net.Listener whose connections are net.Pipes: conns
// that are no syscall.Conn.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial returns the client's end of a new pipe connection.
func (l *pipeListener) dial(t testing.TB) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	select {
	case l.conns <- b:
	case <-time.After(testTimeout):
		t.Fatal("the pipe connection was not accepted")
	}
	return a
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
