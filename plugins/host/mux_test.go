package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/switchyard-dev/switchyard/internal/callctx"
	"github.com/switchyard-dev/switchyard/plugins/proto"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// memConn serves srv on an in-memory listener and returns a connection to
// it; both end with the test.
func memConn(t *testing.T, srv proto.PluginServer) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(sdk.ServerOptions()...)
	proto.RegisterPluginServer(s, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///mem",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
		<-done
	})
	return conn
}

// memClient is a Client with streams open on srv.
func memClient(t *testing.T, srv proto.PluginServer, streams int) *Client {
	t.Helper()
	c := NewClient(memConn(t, srv), 0)
	if err := c.Open(streams); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// fakePlugin answers each call with scripted frames and reports the
// cancellations it receives.
type fakePlugin struct {
	proto.UnimplementedPluginServer
	// answer returns the frames for call id; a nil frame breaks the
	// stream with an error.
	answer   func(id uint64) []*proto.Reply
	cancels  chan uint64
	received chan *proto.Call
}

func newFakePlugin(answer func(id uint64) []*proto.Reply) *fakePlugin {
	return &fakePlugin{answer: answer, cancels: make(chan uint64, 16), received: make(chan *proto.Call, 1024)}
}

func (f *fakePlugin) Describe(context.Context, *proto.DescribeRequest) (*proto.DescribeResponse, error) {
	return &proto.DescribeResponse{Name: "fake"}, nil
}

func (f *fakePlugin) Configure(_ context.Context, req *proto.ConfigureRequest) (*proto.ConfigureResponse, error) {
	if req.GetSlot() == "refuse" {
		return nil, status.Error(codes.InvalidArgument, "refused: bad settings")
	}
	return &proto.ConfigureResponse{}, nil
}

func (f *fakePlugin) Calls(s proto.Plugin_CallsServer) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case f.received <- m:
		default:
		}
		switch m.GetFrame().(type) {
		case *proto.Call_Http:
			for _, r := range f.answer(m.GetId()) {
				if r == nil {
					return status.Error(codes.Internal, "fake plugin broke the stream")
				}
				if err := s.Send(r); err != nil {
					return err
				}
			}
		case *proto.Call_Cancel:
			f.cancels <- m.GetId()
		}
	}
}

func head(id uint64, code int32, end bool, body string) *proto.Reply {
	return &proto.Reply{Id: id, Frame: &proto.Reply_Http{Http: &proto.HTTPResponse{Status: code, End: end, Body: []byte(body)}}}
}

func bodyFrame(id uint64, data string, end bool) *proto.Reply {
	return &proto.Reply{Id: id, Frame: &proto.Reply_Body{Body: &proto.Body{Data: []byte(data), End: end}}}
}

func failureFrame(id uint64, msg string) *proto.Reply {
	return &proto.Reply{Id: id, Frame: &proto.Reply_Failure{Failure: &proto.Failure{Message: msg}}}
}

// deadlineRecorder is an httptest.ResponseRecorder whose request body read
// can be stopped, as net/http's ResponseWriter's can.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	body        *stoppableBody
	wroteHeader bool
}

func (w *deadlineRecorder) WriteHeader(code int) {
	w.wroteHeader = true
	w.ResponseRecorder.WriteHeader(code)
}

func (w *deadlineRecorder) SetReadDeadline(time.Time) error {
	if w.body != nil {
		w.body.stop()
	}
	return nil
}

// stoppableBody is a request body that never ends until stopped.
type stoppableBody struct {
	pr   *io.PipeReader
	pw   *io.PipeWriter
	once sync.Once
}

func newStoppableBody() *stoppableBody {
	pr, pw := io.Pipe()
	return &stoppableBody{pr: pr, pw: pw}
}

func (b *stoppableBody) Read(p []byte) (int, error) { return b.pr.Read(p) }
func (b *stoppableBody) Close() error               { return nil }
func (b *stoppableBody) stop() {
	b.once.Do(func() { _ = b.pw.CloseWithError(errors.New("read deadline")) })
}

func TestProtocolViolations(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(id uint64) []*proto.Reply
		want       []error // errors.Is must hold for each
		notWant    []error
		headSent   bool
		wantCancel bool // the kernel cancels the call in the plugin
	}{
		{
			name: "ok",
			answer: func(id uint64) []*proto.Reply {
				return []*proto.Reply{head(id, 200, false, "a"), bodyFrame(id, "b", true)}
			},
			want: nil, headSent: true,
		},
		{
			name: "frames for unknown calls are ignored",
			answer: func(id uint64) []*proto.Reply {
				return []*proto.Reply{head(id+100, 500, false, "x"), bodyFrame(id+100, "y", true), head(id, 200, true, "ab")}
			},
			headSent: true,
		},
		{
			name:       "body before head",
			answer:     func(id uint64) []*proto.Reply { return []*proto.Reply{bodyFrame(id, "x", false)} },
			want:       []error{ErrProtocol},
			notWant:    []error{ErrAborted},
			wantCancel: true,
		},
		{
			name: "second head",
			answer: func(id uint64) []*proto.Reply {
				return []*proto.Reply{head(id, 200, false, "a"), head(id, 200, false, "b")}
			},
			want:       []error{ErrProtocol, ErrAborted},
			headSent:   true,
			wantCancel: true,
		},
		{
			name:       "invalid status",
			answer:     func(id uint64) []*proto.Reply { return []*proto.Reply{head(id, 99, false, "")} },
			want:       []error{ErrProtocol},
			notWant:    []error{ErrAborted},
			wantCancel: true,
		},
		{
			name:    "failure before head",
			answer:  func(id uint64) []*proto.Reply { return []*proto.Reply{failureFrame(id, "no such handler")} },
			want:    []error{ErrFailed},
			notWant: []error{ErrAborted},
		},
		{
			name: "failure after head",
			answer: func(id uint64) []*proto.Reply {
				return []*proto.Reply{head(id, 200, false, "a"), failureFrame(id, "handler panicked")}
			},
			want:     []error{ErrFailed, ErrAborted},
			headSent: true,
		},
		{
			name:    "unknown frame",
			answer:  func(id uint64) []*proto.Reply { return []*proto.Reply{{Id: id}} },
			want:    []error{ErrProtocol},
			notWant: []error{ErrAborted},
		},
		{
			name:    "stream breaks before head",
			answer:  func(id uint64) []*proto.Reply { return []*proto.Reply{nil} },
			want:    []error{ErrUnavailable},
			notWant: []error{ErrAborted, ErrNotSent},
		},
		{
			name:     "stream breaks after head",
			answer:   func(id uint64) []*proto.Reply { return []*proto.Reply{head(id, 200, false, "a"), nil} },
			want:     []error{ErrUnavailable, ErrAborted},
			headSent: true,
		},
	}
	for _, tt := range tests {
		for _, streamed := range []bool{false, true} {
			name := tt.name
			if streamed {
				name += " with a streamed body"
			}
			t.Run(name, func(t *testing.T) {
				f := newFakePlugin(tt.answer)
				c := memClient(t, f, 1)
				req := httptest.NewRequest("POST", "/x", strings.NewReader("inline body"))
				w := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
				if streamed {
					// A body that never ends: the pump must be stopped.
					w.body = newStoppableBody()
					req.Body, req.ContentLength = w.body, -1
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				err := c.ServeHTTP(ctx, w, req, "l")
				for _, e := range tt.want {
					if !errors.Is(err, e) {
						t.Errorf("error %v, want it to be %v", err, e)
					}
				}
				for _, e := range tt.notWant {
					if errors.Is(err, e) {
						t.Errorf("error %v, want it not to be %v", err, e)
					}
				}
				if tt.want == nil && err != nil {
					t.Errorf("error %v", err)
				}
				if w.wroteHeader != tt.headSent {
					t.Errorf("head sent: %v, want %v", w.wroteHeader, tt.headSent)
				}
				if !tt.headSent && (w.Body.Len() > 0 || len(w.Header()) > 0) {
					t.Errorf("wrote %v %q before failing", w.Header(), w.Body)
				}
				if tt.wantCancel {
					select {
					case <-f.cancels:
					case <-time.After(5 * time.Second):
						t.Error("the plugin was not told to cancel the call")
					}
				}
				// Nothing is left pending on the stream.
				s := c.streams[0]
				s.mu.Lock()
				n := len(s.calls)
				s.mu.Unlock()
				if n != 0 {
					t.Errorf("%d calls left pending", n)
				}
			})
		}
	}
}

// TestBrokenStreams checks that calls on broken streams fail with ErrNotSent
// before they consume the request, and that pick skips broken streams.
func TestBrokenStreams(t *testing.T) {
	var mu sync.Mutex
	broken := 0
	f := newFakePlugin(func(id uint64) []*proto.Reply {
		mu.Lock()
		defer mu.Unlock()
		if broken < 1 {
			broken++
			return []*proto.Reply{nil}
		}
		return []*proto.Reply{head(id, 200, true, "ok")}
	})
	c := memClient(t, f, 2)
	serve := func() (error, *httptest.ResponseRecorder) {
		w := httptest.NewRecorder()
		return c.ServeHTTP(context.Background(), w, httptest.NewRequest("GET", "/", nil), "l"), w
	}
	if err, _ := serve(); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotSent) {
		t.Fatalf("first call: %v, want ErrUnavailable (it was sent)", err)
	}
	// The other stream still serves, whichever the round robin picks.
	for range 4 {
		if err, w := serve(); err != nil || w.Body.String() != "ok" {
			t.Fatalf("call on the healthy stream: %v %q", err, w.Body)
		}
	}
	c.Close()
	body := strings.NewReader("kept")
	req := httptest.NewRequest("POST", "/", body)
	err := c.ServeHTTP(context.Background(), httptest.NewRecorder(), req, "l")
	if !errors.Is(err, ErrNotSent) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after Close: %v, want ErrNotSent and ErrUnavailable", err)
	}
	if b, _ := io.ReadAll(req.Body); string(b) != "kept" {
		t.Errorf("a call that was not sent consumed the body: %q left", b)
	}
}

func TestNotOpen(t *testing.T) {
	c := NewClient(memConn(t, newFakePlugin(nil)), 0)
	err := c.ServeHTTP(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "l")
	if !errors.Is(err, ErrNotSent) {
		t.Errorf("call before Open: %v, want ErrNotSent", err)
	}
	if err := c.Open(1); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Open(1); err == nil {
		t.Error("a second Open succeeded")
	}
}

func TestExpiredDeadlineIsNotSent(t *testing.T) {
	f := newFakePlugin(func(id uint64) []*proto.Reply { return []*proto.Reply{head(id, 200, true, "")} })
	c := memClient(t, f, 1)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err := c.ServeHTTP(ctx, httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "l")
	if !errors.Is(err, context.DeadlineExceeded) || StatusFor(err) != http.StatusGatewayTimeout {
		t.Errorf("error %v (status %d), want a deadline (504)", err, StatusFor(err))
	}
	select {
	case m := <-f.received:
		t.Errorf("the plugin got %v for a call already out of time", m)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestUnaryErrors(t *testing.T) {
	f := newFakePlugin(nil)
	conn := memConn(t, f)
	c := NewClient(conn, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if d, err := c.Describe(ctx); err != nil || d.GetName() != "fake" {
		t.Fatalf("Describe: %v %v", d, err)
	}
	err := c.Configure(ctx, &proto.ConfigureRequest{Slot: "refuse"})
	if err == nil || !strings.Contains(err.Error(), "refused: bad settings") || errors.Is(err, ErrUnavailable) {
		t.Errorf("refused Configure: %v", err)
	}
	_ = conn.Close()
	if _, err := c.Describe(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Describe on a closed connection: %v, want ErrUnavailable", err)
	}
}

// TestDrain checks that a call in flight when Drain starts still gets the
// credit it needs to send a large answer, that new calls are refused, and
// that Drain returns once the last call has ended.
func TestDrain(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	const size = 2 << 20
	svc := sdk.NewService(sdk.Plugin{Name: "d", HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = w.Write(bytes.Repeat([]byte("x"), size))
	})}, nil)
	c := memClient(t, svc, 2)

	type result struct {
		err error
		n   int
	}
	done := make(chan result, 1)
	go func() {
		w := httptest.NewRecorder()
		err := c.ServeHTTP(context.Background(), w, httptest.NewRequest("GET", "/", nil), "l")
		done <- result{err, w.Body.Len()}
	}()
	<-started
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- c.Drain(ctx)
	}()
	// Drain marks the streams at once.
	deadline := time.Now().Add(5 * time.Second)
	for c.streams[0].usable() || c.streams[1].usable() {
		if time.Now().After(deadline) {
			t.Fatal("Drain did not stop the streams taking calls")
		}
		time.Sleep(time.Millisecond)
	}
	err := c.ServeHTTP(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "l")
	if !errors.Is(err, ErrNotSent) {
		t.Errorf("call while draining: %v, want ErrNotSent", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with a call in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	r := <-done
	if r.err != nil || r.n != size {
		t.Errorf("call in flight during Drain: %v, %d bytes, want %d", r.err, r.n, size)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
	for i, s := range c.streams {
		select {
		case <-s.done:
		default:
			t.Errorf("stream %d did not end", i)
		}
	}
}

// TestCloseFailsCallsInFlight checks that Close fails a call waiting for
// its answer with ErrUnavailable, and stops the pump of its body.
func TestCloseFailsCallsInFlight(t *testing.T) {
	started := make(chan struct{})
	svc := sdk.NewService(sdk.Plugin{Name: "c", HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})}, nil)
	c := memClient(t, svc, 1)
	w := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder(), body: newStoppableBody()}
	req := httptest.NewRequest("POST", "/", nil)
	req.Body, req.ContentLength = w.body, -1
	errc := make(chan error, 1)
	go func() { errc <- c.ServeHTTP(context.Background(), w, req, "l") }()
	<-started
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("call in flight at Close: %v, want ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call in flight did not end at Close")
	}
}

// TestCreditOverrun: a plugin that sends more answer than its credit allows
// fails its call instead of making the kernel buffer without bound.
func TestCreditOverrun(t *testing.T) {
	p := &pending{id: 1, wake: make(chan struct{}, 1)}
	chunk := strings.Repeat("x", 32<<10)
	p.push(head(1, 200, false, chunk), false)
	for sent := len(chunk); sent <= maxQueued; sent += len(chunk) {
		p.push(bodyFrame(1, chunk, false), false)
	}
	if _, err := p.next(context.Background()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("next after an overrun: %v, want ErrProtocol", err)
	}
	// Within its credit, frames are kept however many there are.
	q := &pending{id: 2, wake: make(chan struct{}, 1)}
	for range 100 {
		q.push(bodyFrame(2, "", false), false)
	}
	q.push(head(2, 200, true, chunk), true)
	for range 101 {
		if _, err := q.next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStreamKeepsDeadlines: calls whose context is a callctx.Ctx wait for
// their answers without a timer each; the stream's one timer ends each at
// its own deadline, whatever order the deadlines come in, including a call
// that starts after the timer fired for an earlier one.
func TestStreamKeepsDeadlines(t *testing.T) {
	f := newFakePlugin(func(uint64) []*proto.Reply { return nil }) // never answers
	c := memClient(t, f, 1)
	call := func(timeout time.Duration) error {
		ctx := callctx.New(context.Background(), timeout)
		defer ctx.Cancel(context.Canceled)
		t0 := time.Now()
		err := c.ServeHTTP(ctx, httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "l")
		if took := time.Since(t0); took < timeout {
			return fmt.Errorf("ended after %v, before its deadline of %v: %v", took, timeout, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) || StatusFor(err) != http.StatusGatewayTimeout {
			return fmt.Errorf("error %v (status %d), want a deadline (504)", err, StatusFor(err))
		}
		return nil
	}
	errs := make(chan error, 4)
	for _, d := range []time.Duration{300 * time.Millisecond, 50 * time.Millisecond, 150 * time.Millisecond} {
		go func() { errs <- call(d) }()
	}
	time.Sleep(80 * time.Millisecond) // the timer has fired for 50 ms
	go func() { errs <- call(60 * time.Millisecond) }()
	for range 4 {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call outlived its deadline by seconds")
		}
	}
	// The cancellations the kernel owes a plugin for calls it gave up on
	// are not sent for a deadline: the plugin keeps the same one.
	select {
	case id := <-f.cancels:
		t.Errorf("call %d was cancelled in the plugin at its deadline", id)
	case <-time.After(50 * time.Millisecond):
	}
}
