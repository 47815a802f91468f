// Package sdktest runs a switchyard plugin in memory for tests, through the
// same code the kernel and the SDK use: requests are converted by the
// kernel's side of the protocol, cross an in-memory gRPC connection on a
// Calls stream, and are rebuilt by the SDK for the plugin's handler. The
// plugin's Configure runs with the settings the test gives, and its Host
// logger writes to the test's log (or to Options.Log, for a test that checks
// what the plugin logs). When the test ends, the plugin is drained and
// stopped, and a response body the test left unread is cut off.
//
//	func TestHello(t *testing.T) {
//		p := sdktest.New(t, newPlugin("v1"), map[string]any{"greeting": "hi"})
//		res, err := p.Client().Get("http://example.test/")
//		...
//	}
package sdktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/plugins/proto"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// Plugin is a plugin running in memory.
type Plugin struct {
	t        testing.TB
	client   *host.Client
	listener string
	store    host.Store
	conns    *connTable
	token    uint64 // names this plugin process to the sessions it meets
	// Describe is what the plugin answered to Describe.
	Describe *proto.DescribeResponse

	wg      sync.WaitGroup // one per RoundTrip whose call runs
	mu      sync.Mutex
	calls   map[*responsePipe]struct{} // calls whose ServeHTTP runs; guarded by mu
	stopped bool                       // the test has ended; guarded by mu
}

// Options tune New. The zero value is fine.
type Options struct {
	// Slot is the slot name the plugin is configured with ("test").
	Slot string
	// Listener is the listener name calls arrive on ("sdktest").
	Listener string
	// Streams is the number of Calls streams (1).
	Streams int
	// Log receives the records the plugin sends through its Host logger,
	// tagged with plugin=SLOT as the kernel tags them. The default writes
	// them to the test's log.
	Log slog.Handler
	// Store is the shared store the plugin's Host reaches; the default is
	// a new in-memory Store.
	Store host.Store
}

// New starts p in memory and configures it with settings, any value that
// marshals to a JSON object (nil for none). It fails the test if Describe or
// Configure fails, and stops the plugin when the test ends.
func New(t testing.TB, p sdk.Plugin, settings any) *Plugin {
	t.Helper()
	pl, err := Start(t, p, settings, Options{})
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	return pl
}

// Start is New with options, returning Configure's error instead of failing
// the test, so a test can check that bad settings are refused.
func Start(t testing.TB, p sdk.Plugin, settings any, o Options) (*Plugin, error) {
	t.Helper()
	if o.Slot == "" {
		o.Slot = "test"
	}
	if o.Listener == "" {
		o.Listener = "sdktest"
	}
	if o.Streams <= 0 {
		o.Streams = 1
	}
	settingsJSON := []byte("{}")
	if settings != nil {
		var err error
		if settingsJSON, err = json.Marshal(settings); err != nil {
			return nil, fmt.Errorf("settings: %w", err)
		}
	}
	h := o.Log
	if h == nil {
		h = slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	log := slog.New(h)

	if o.Store == nil {
		o.Store = NewStore()
	}
	conns := newConnTable()
	hostConn := serve(t, func(s *grpc.Server) {
		proto.RegisterHostServer(s, host.NewHostService(log.With("plugin", o.Slot), o.Store, conns))
	})
	pluginConn := serve(t, func(s *grpc.Server) {
		proto.RegisterPluginServer(s, sdk.NewService(p, func(uint32) (*grpc.ClientConn, error) {
			return hostConn, nil
		}))
	})

	c := host.NewClient(pluginConn, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Describe(ctx)
	if err != nil {
		return nil, err
	}
	// One listener named o.Listener for each protocol the plugin serves.
	var listeners []*proto.Listener
	for _, pr := range d.GetProtocols() {
		if pr != "timer" {
			listeners = append(listeners, &proto.Listener{Name: o.Listener, Protocol: pr, Address: "sdktest"})
		}
	}
	err = c.Configure(ctx, &proto.ConfigureRequest{
		Slot:         o.Slot,
		Generation:   1,
		SettingsJson: settingsJSON,
		Listeners:    listeners,
		LogLevel:     int32(slog.LevelDebug),
	})
	if err != nil {
		return nil, err
	}
	if err := c.Open(o.Streams); err != nil {
		return nil, err
	}
	pl := &Plugin{t: t, client: c, listener: o.Listener, store: o.Store, conns: conns, token: conns.token(), Describe: d, calls: make(map[*responsePipe]struct{})}
	t.Cleanup(pl.stop)
	return pl, nil
}

// stop ends the plugin when the test ends: it cuts off response bodies the
// test left unread, lets the plugin finish its calls, and waits until every
// RoundTrip's call has ended.
func (p *Plugin) stop() {
	p.mu.Lock()
	p.stopped = true
	for w := range p.calls {
		_ = w.pr.CloseWithError(errors.New("sdktest: the test ended with the response body unread"))
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.client.Drain(ctx)
	p.client.Close()
	p.wg.Wait()
}

// serve runs a gRPC server on an in-memory listener and returns a
// connection to it; both end with the test.
func serve(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(sdk.ServerOptions()...)
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///sdktest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxMessageSize), grpc.MaxCallSendMsgSize(sdk.MaxMessageSize)),
	)
	if err != nil {
		t.Fatalf("sdktest: dial: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
		<-done
	})
	return conn
}

// Store is the shared store the plugin's Host reaches, with keys as the
// plugin names them.
func (p *Plugin) Store() host.Store { return p.store }

// Client returns an http.Client whose requests go to the plugin, whatever
// their URL's host.
func (p *Plugin) Client() *http.Client {
	return &http.Client{Transport: p}
}

// RoundTrip sends req to the plugin as the kernel would send a request it
// received, and returns once the plugin has sent the response head. The
// response body streams as the plugin writes it. Like http.Transport,
// RoundTrip closes req.Body; cancelling req's context fails the call (the
// plugin's handler sees its context cancelled) and a body read in progress.
func (p *Plugin) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	r := req.Clone(ctx)
	r.RequestURI = req.URL.RequestURI()
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	if r.RemoteAddr == "" {
		r.RemoteAddr = "192.0.2.1:1234"
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if r.Body != http.NoBody && r.ContentLength == 0 {
		r.ContentLength = -1
	}
	if r.ContentLength < 0 {
		r.TransferEncoding = []string{"chunked"}
	}
	var body *requestBody
	if r.Body != http.NoBody {
		body = &requestBody{rc: r.Body}
		r.Body = body
	}
	w := newResponsePipe(req, body)
	stop := context.AfterFunc(ctx, func() {
		// As a transport drops the connection: the kernel's writes fail,
		// and so does the reader's next read.
		_ = w.pw.CloseWithError(ctx.Err())
	})
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errors.New("sdktest: RoundTrip after the test ended")
	}
	p.calls[w] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.calls, w)
			p.mu.Unlock()
		}()
		err := p.client.ServeHTTP(ctx, w, r, p.listener)
		if body != nil {
			body.closeOnce()
		} else if req.Body != nil {
			_ = req.Body.Close()
		}
		w.finish(err)
		stop()
	}()
	return w.response()
}

// Get is a shorthand for a GET of path that fails the test on a transport
// error and returns the status and body.
func (p *Plugin) Get(path string) (int, string) {
	p.t.Helper()
	res, err := p.Client().Get("http://sdktest" + path)
	if err != nil {
		p.t.Fatalf("sdktest: GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		p.t.Fatalf("sdktest: GET %s: reading body: %v", path, err)
	}
	return res.StatusCode, string(b)
}

// responsePipe is an http.ResponseWriter whose output becomes an
// *http.Response as soon as the head is written.
type responsePipe struct {
	req    *http.Request
	body   *requestBody // nil when there is none
	header http.Header  // used by the ServeHTTP goroutine only
	isHEAD bool
	pr     *io.PipeReader
	pw     *io.PipeWriter
	// trailer is filled before pw is closed, so a reader that saw EOF sees
	// it complete.
	trailer http.Header

	mu       sync.Mutex
	status   int         // guarded by mu
	head     http.Header // the header at WriteHeader; guarded by mu
	errBody  string      // the kernel's error answer; guarded by mu
	headDone chan struct{}
}

var (
	_ http.ResponseWriter = (*responsePipe)(nil)
	_ http.Flusher        = (*responsePipe)(nil)
)

func newResponsePipe(req *http.Request, body *requestBody) *responsePipe {
	pr, pw := io.Pipe()
	return &responsePipe{
		req:      req,
		body:     body,
		header:   make(http.Header),
		isHEAD:   req.Method == http.MethodHead,
		pr:       pr,
		pw:       pw,
		trailer:  make(http.Header),
		headDone: make(chan struct{}),
	}
}

func (w *responsePipe) Header() http.Header { return w.header }

func (w *responsePipe) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status != 0 {
		return
	}
	w.status = code
	w.head = w.header.Clone()
	// Declared trailers are known, without values, before the body ends,
	// as net/http's client presents them.
	for _, v := range w.head.Values("Trailer") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				w.trailer[http.CanonicalHeaderKey(name)] = nil
			}
		}
	}
	close(w.headDone)
}

func (w *responsePipe) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.isHEAD {
		// net/http discards the body of an answer to HEAD.
		return len(b), nil
	}
	return w.pw.Write(b)
}

func (w *responsePipe) Flush() {}

// SetReadDeadline is what http.ResponseController calls to stop a read of
// the request body: at t, the body is closed and reads of it fail.
func (w *responsePipe) SetReadDeadline(t time.Time) error {
	if w.body == nil || t.IsZero() {
		return nil
	}
	if d := time.Until(t); d > 0 {
		time.AfterFunc(d, w.body.abort)
		return nil
	}
	w.body.abort()
	return nil
}

// finish ends the response after ServeHTTP returned err.
func (w *responsePipe) finish(err error) {
	w.mu.Lock()
	if err != nil && w.status == 0 {
		// What the kernel answers when the plugin cannot.
		w.status = host.StatusFor(err)
		w.head = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
		w.errBody = err.Error() + "\n"
		close(w.headDone)
		w.mu.Unlock()
		_ = w.pw.Close()
		return
	}
	w.mu.Unlock()
	if err != nil {
		_ = w.pw.CloseWithError(fmt.Errorf("sdktest: response aborted: %w", err))
		return
	}
	if cerr := w.req.Context().Err(); cerr != nil {
		// ServeHTTP gave up because the caller did: the body is cut short.
		_ = w.pw.CloseWithError(cerr)
		return
	}
	w.WriteHeader(http.StatusOK)
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			w.trailer[http.CanonicalHeaderKey(name)] = vs
		}
	}
	_ = w.pw.Close()
}

func (w *responsePipe) response() (*http.Response, error) {
	select {
	case <-w.headDone:
	case <-w.req.Context().Done():
		return nil, w.req.Context().Err()
	}
	w.mu.Lock()
	code, head, errBody := w.status, w.head, w.errBody
	w.mu.Unlock()
	var body io.ReadCloser = w.pr
	if errBody != "" {
		body = io.NopCloser(strings.NewReader(errBody))
	}
	if w.isHEAD {
		body = http.NoBody
	}
	cl := int64(-1)
	if n, err := strconv.ParseInt(head.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		cl = n
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", code, http.StatusText(code)),
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        head,
		Body:          body,
		ContentLength: cl,
		Trailer:       w.trailer,
		Request:       w.req,
	}, nil
}

// requestBody is the client's request body as the kernel reads it. abort
// closes it, which ends a read in progress when the body is an io.Pipe or a
// network stream, and fails the reads that follow.
type requestBody struct {
	rc      io.ReadCloser
	aborted atomic.Bool
	once    sync.Once
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.aborted.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := b.rc.Read(p)
	if err != nil && b.aborted.Load() {
		err = os.ErrDeadlineExceeded
	}
	return n, err
}

func (b *requestBody) Close() error { return nil } // RoundTrip closes rc

func (b *requestBody) abort() {
	b.aborted.Store(true)
	b.closeOnce()
}

func (b *requestBody) closeOnce() { b.once.Do(func() { _ = b.rc.Close() }) }

// testWriter writes log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
