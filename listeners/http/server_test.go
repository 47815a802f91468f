package http

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

func okDispatcher(body string) Dispatcher {
	return dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		io.WriteString(w, body)
		return nil
	})
}

func TestKeepAlive(t *testing.T) {
	ts := startServer(t, Config{}, okDispatcher("hi"))
	var reused []bool
	for range 3 {
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) }}
		ctx := httptrace.WithClientTrace(context.Background(), trace)
		req, err := nethttp.NewRequestWithContext(ctx, "GET", ts.url+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "hi" {
			t.Fatalf("body %q, %v", b, err)
		}
	}
	if want := []bool{false, true, true}; fmt.Sprint(reused) != fmt.Sprint(want) {
		t.Errorf("connection reused = %v, want %v", reused, want)
	}
	if got := ts.Stats().Accepted; got != 1 {
		t.Errorf("Accepted = %d, want 1", got)
	}
}

// bodyDispatcher answers with the SHA-256 of the body it read and its transfer encoding; a read error is
// recorded in readErr and answered 413.
type bodyDispatcher struct {
	called  atomic.Int64
	readErr atomic.Pointer[error]
}

func (d *bodyDispatcher) Dispatch(w nethttp.ResponseWriter, r *nethttp.Request) error {
	d.called.Add(1)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		d.readErr.Store(&err)
		nethttp.Error(w, err.Error(), nethttp.StatusRequestEntityTooLarge)
		return fmt.Errorf("reading body: %w", err)
	}
	sum := sha256.Sum256(b)
	fmt.Fprintf(w, "%s %s", hex.EncodeToString(sum[:]), strings.Join(r.TransferEncoding, ","))
	return nil
}

func TestBodyLimit(t *testing.T) {
	const limit = 64 << 10
	tests := []struct {
		name        string
		size        int
		chunked     bool
		wantStatus  int  // 0: the client may also see the connection cut while still sending
		wantCalled  bool // the dispatcher was called
		wantReadErr bool // its read failed with *http.MaxBytesError
	}{
		{name: "content-length under limit", size: limit - 1, wantStatus: 200, wantCalled: true},
		{name: "content-length at limit", size: limit, wantStatus: 200, wantCalled: true},
		{name: "content-length over limit", size: 4 * limit, wantStatus: 413},
		{name: "chunked under limit", size: limit - 1, chunked: true, wantStatus: 200, wantCalled: true},
		{name: "chunked at limit", size: limit, chunked: true, wantStatus: 200, wantCalled: true},
		{name: "chunked over limit", size: 4 * limit, chunked: true, wantCalled: true, wantReadErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &bodyDispatcher{}
			ts := startServer(t, Config{MaxBody: limit}, d)
			data := make([]byte, tt.size)
			rand.Read(data)
			var body io.Reader = bytes.NewReader(data)
			if tt.chunked {
				body = io.MultiReader(body) // unknown length
			}
			req, err := nethttp.NewRequest("POST", ts.url+"/upload", body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.chunked {
				req.TransferEncoding = []string{"chunked"}
			}
			resp, err := ts.client.Do(req)
			if err != nil {
				if tt.wantStatus != 0 {
					t.Fatal(err)
				}
				t.Logf("client: %v (the server cut the upload)", err)
			} else {
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case tt.wantStatus != 0 && resp.StatusCode != tt.wantStatus:
					t.Fatalf("status %d %q, want %d", resp.StatusCode, got, tt.wantStatus)
				case resp.StatusCode == 200:
					sum := sha256.Sum256(data)
					want := hex.EncodeToString(sum[:])
					if tt.chunked {
						want += " chunked"
					} else {
						want += " "
					}
					if string(got) != want {
						t.Errorf("dispatcher saw %q, want %q", got, want)
					}
				case resp.StatusCode == 413:
					if !resp.Close {
						t.Error("413 without Connection: close")
					}
				}
			}
			if got := d.called.Load() == 1; got != tt.wantCalled {
				t.Errorf("dispatcher called = %v, want %v", got, tt.wantCalled)
			}
			var readErr error
			if p := d.readErr.Load(); p != nil {
				readErr = *p
			}
			var mbe *nethttp.MaxBytesError
			if got := errors.As(readErr, &mbe); got != tt.wantReadErr {
				t.Errorf("dispatcher read error %v, want a *http.MaxBytesError: %v", readErr, tt.wantReadErr)
			} else if got && mbe.Limit != limit {
				t.Errorf("MaxBytesError.Limit = %d, want %d", mbe.Limit, limit)
			}
			st := ts.Stats()
			wantErrors := int64(0)
			if tt.wantStatus == 413 || tt.wantReadErr {
				wantErrors = 1
			}
			if st.Requests != 1 || st.Errors != wantErrors {
				t.Errorf("Stats = %+v, want 1 request and %d errors", st, wantErrors)
			}
		})
	}
}

func TestReadHeaderTimeout(t *testing.T) {
	var called atomic.Bool
	ts := startServer(t, Config{ReadHeaderTimeout: 200 * time.Millisecond}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		called.Store(true)
		return nil
	}))
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.com\r\nX-Half: "); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1024))
	elapsed := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %v", elapsed)
	}
	if err == nil {
		t.Fatalf("read %d bytes, want the connection closed", n)
	}
	if elapsed < 150*time.Millisecond {
		t.Errorf("connection closed after %v, before ReadHeaderTimeout", elapsed)
	}
	if called.Load() {
		t.Error("dispatcher called for a half-sent header")
	}
	testutil.WaitFor(t, 5*time.Second, "the connection to be counted closed", func() bool { return ts.Stats().Connections == 0 })
}

func TestSetDispatcherInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	old := dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		close(entered)
		<-release
		io.WriteString(w, "old")
		return nil
	})
	ts := startServer(t, Config{}, old)

	type result struct {
		body string
		err  error
	}
	first := make(chan result, 1)
	go func() {
		resp, err := ts.client.Get(ts.url + "/slow")
		if err != nil {
			first <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		first <- result{string(b), err}
	}()
	<-entered
	ts.SetDispatcher(okDispatcher("new"))
	if _, body := ts.get(t, "/fast"); body != "new" {
		t.Errorf("request after SetDispatcher answered %q, want new", body)
	}
	close(release)
	if r := <-first; r.err != nil || r.body != "old" {
		t.Errorf("request in flight answered %q, %v; want old", r.body, r.err)
	}
	if _, body := ts.get(t, "/again"); body != "new" {
		t.Errorf("later request answered %q, want new", body)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("graceful waits for in-flight request", func(t *testing.T) {
		entered := make(chan struct{})
		release := make(chan struct{})
		ts := startServer(t, Config{}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
			close(entered)
			<-release
			io.WriteString(w, "done")
			return nil
		}))
		type result struct {
			resp *nethttp.Response
			body string
			err  error
		}
		got := make(chan result, 1)
		go func() {
			resp, err := ts.client.Get(ts.url + "/slow")
			if err != nil {
				got <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			got <- result{resp, string(b), err}
		}()
		<-entered

		shutdown := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			shutdown <- ts.Shutdown(ctx)
		}()
		if err := ts.waitServe(t); err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
		if c, err := net.Dial("tcp", ts.addr); err == nil {
			c.Close()
			t.Error("listener still accepts after Shutdown began")
		}
		select {
		case err := <-shutdown:
			t.Fatalf("Shutdown returned %v with a request in flight", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		r := <-got
		if r.err != nil || r.body != "done" {
			t.Fatalf("in-flight request: %q, %v", r.body, r.err)
		}
		if !r.resp.Close {
			t.Error("response during shutdown lacks Connection: close")
		}
		if err := <-shutdown; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	t.Run("expired context closes the connection", func(t *testing.T) {
		entered := make(chan struct{})
		sawCancel := make(chan struct{})
		ts := startServer(t, Config{}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
			close(entered)
			select {
			case <-r.Context().Done():
				close(sawCancel)
			case <-time.After(10 * time.Second):
			}
			return nil
		}))
		got := make(chan error, 1)
		go func() {
			resp, err := ts.client.Get(ts.url + "/hang")
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			got <- err
		}()
		<-entered
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		err := ts.Shutdown(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown = %v, want context.Canceled", err)
		}
		if err := <-got; err == nil {
			t.Error("client got a whole response from a force-closed connection")
		}
		select {
		case <-sawCancel:
		case <-time.After(5 * time.Second):
			t.Error("dispatcher's request context not cancelled")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("forced shutdown took %v", d)
		}
		if err := ts.waitServe(t); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
		testutil.WaitFor(t, 5*time.Second, "connections to close", func() bool { return ts.Stats().Connections == 0 })
	})

	t.Run("closes idle keep-alive connections", func(t *testing.T) {
		ts := startServer(t, Config{}, okDispatcher("x"))
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := nethttp.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		testutil.WaitFor(t, 5*time.Second, "the connection to go idle", func() bool { return ts.Stats().Requests == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("idle connection read after Shutdown: %v, want EOF", err)
		}
	})

	t.Run("before Serve and twice", func(t *testing.T) {
		testutil.CheckGoroutines(t)
		s := New(Config{Name: "early"}, okDispatcher("x"))
		for i := range 2 {
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown #%d: %v", i+1, err)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ln) }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after Shutdown = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve after Shutdown did not return")
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener after Serve returned: Accept = %v, want net.ErrClosed", err)
		}
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown after Serve: %v", err)
		}
		if st := s.Stats(); st != (Stats{}) {
			t.Errorf("Stats = %+v, want zero", st)
		}
	})
}

func TestPanic(t *testing.T) {
	tests := []struct {
		name       string
		dispatch   func(w nethttp.ResponseWriter, r *nethttp.Request) error
		wantStatus int
		wantCut    bool   // the client sees the body cut short
		wantLog    string // "" means nothing at Error level
	}{
		{
			name: "before head",
			dispatch: func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				w.Header().Set("X-Leak", "1")
				w.Header().Set("Content-Length", "99")
				panic("boom")
			},
			wantStatus: 500,
			wantLog:    "dispatcher panic",
		},
		{
			name: "after informational head",
			dispatch: func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				w.WriteHeader(nethttp.StatusEarlyHints)
				panic(errors.New("boom"))
			},
			wantStatus: 500,
			wantLog:    "dispatcher panic",
		},
		{
			name: "after head",
			dispatch: func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				io.WriteString(w, "partial")
				w.(nethttp.Flusher).Flush()
				panic("boom")
			},
			wantStatus: 200,
			wantCut:    true,
			wantLog:    "dispatcher panic",
		},
		{
			name: "ErrAbortHandler",
			dispatch: func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "only ten b")
				if err := nethttp.NewResponseController(w).Flush(); err != nil {
					return err
				}
				panic(nethttp.ErrAbortHandler)
			},
			wantStatus: 200,
			wantCut:    true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			ts := startServer(t, Config{}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				if n.Add(1) == 1 {
					return tt.dispatch(w, r)
				}
				io.WriteString(w, "still here")
				return nil
			}))
			resp, err := ts.client.Get(ts.url + "/panic")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if cut := err != nil; cut != tt.wantCut {
				t.Errorf("reading body: %v (body %q); want cut short: %v", err, body, tt.wantCut)
			}
			if tt.wantStatus == 500 && resp.Header.Get("X-Leak") != "" {
				t.Error("500 carries a header set before the panic")
			}
			if code, body := ts.get(t, "/next"); code != 200 || body != "still here" {
				t.Errorf("after the panic: %d %q", code, body)
			}
			if st := ts.Stats(); st.Requests != 2 || st.Errors != 1 {
				t.Errorf("Stats = %+v, want 2 requests, 1 error", st)
			}
			log := ts.log.String()
			if tt.wantLog == "" {
				if strings.Contains(log, "level=ERROR") || strings.Contains(log, "panic") {
					t.Errorf("unexpected log:\n%s", log)
				}
			} else if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, tt.wantLog) || !strings.Contains(log, "server_test.go") {
				t.Errorf("log lacks an error with the stack:\n%s", log)
			}
		})
	}
}

func TestDispatchError(t *testing.T) {
	tests := []struct {
		name       string
		dispatch   func(w nethttp.ResponseWriter, r *nethttp.Request) error
		wantStatus int
	}{
		{
			name: "dispatcher answered",
			dispatch: func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				nethttp.Error(w, "bad gateway", nethttp.StatusBadGateway)
				return errors.New("plugin gone")
			},
			wantStatus: 502,
		},
		{
			name: "dispatcher wrote nothing",
			dispatch: func(w nethttp.ResponseWriter, r *nethttp.Request) error {
				w.Header().Set("X-Leak", "1")
				return errors.New("plugin gone")
			},
			wantStatus: 502,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{}, dispatchFunc(tt.dispatch))
			resp, err := ts.client.Get(ts.url + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Leak") != "" {
				t.Errorf("status %d, headers %v; want %d", resp.StatusCode, resp.Header, tt.wantStatus)
			}
			if st := ts.Stats(); st.Requests != 1 || st.Errors != 1 {
				t.Errorf("Stats = %+v, want 1 request, 1 error", st)
			}
		})
	}
}

func TestNilDispatcher(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	if code, _ := ts.get(t, "/"); code != 503 {
		t.Errorf("status %d, want 503", code)
	}
	ts.SetDispatcher(okDispatcher("up"))
	if code, body := ts.get(t, "/"); code != 200 || body != "up" {
		t.Errorf("after SetDispatcher: %d %q", code, body)
	}
}

func TestNoHTTP2(t *testing.T) {
	var seen atomic.Pointer[nethttp.Header]
	ts := startServer(t, Config{}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		h := r.Header.Clone()
		seen.Store(&h)
		io.WriteString(w, r.Proto)
		return nil
	}))
	tests := []struct {
		name       string
		raw        string
		wantStatus int
		check      func(t *testing.T)
	}{
		{
			name:       "prior knowledge preface",
			raw:        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
			wantStatus: 505,
		},
		{
			name:       "h2c upgrade ignored",
			raw:        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			wantStatus: 200,
			check: func(t *testing.T) {
				h := *seen.Load()
				if h.Get("Upgrade") != "" || h.Get("HTTP2-Settings") != "" {
					t.Errorf("dispatcher saw the h2c offer: %v", h)
				}
			},
		},
		{
			name:       "other upgrade kept",
			raw:        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
			wantStatus: 200,
			check: func(t *testing.T) {
				if got := seen.Load().Get("Upgrade"); got != "websocket" {
					t.Errorf("dispatcher saw Upgrade %q, want websocket", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tt.raw)
			resp, err := nethttp.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || resp.Proto != "HTTP/1.1" {
				t.Fatalf("%s %d %q, want HTTP/1.1 %d", resp.Proto, resp.StatusCode, body, tt.wantStatus)
			}
			if tt.check != nil {
				tt.check(t)
			}
		})
	}
}

func TestStats(t *testing.T) {
	ts := startServer(t, Config{MaxBody: 10}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		if r.URL.Path == "/fail" {
			nethttp.Error(w, "bad gateway", nethttp.StatusBadGateway)
			return errors.New("plugin gone")
		}
		io.WriteString(w, "ok")
		return nil
	}))
	for range 3 {
		ts.get(t, "/")
	}
	ts.get(t, "/fail")
	resp, err := ts.client.Post(ts.url+"/", "text/plain", strings.NewReader("more than ten bytes"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("oversized POST: %d, want 413", resp.StatusCode)
	}

	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	// The 413 closed the keep-alive connection; the raw one is open now.
	testutil.WaitFor(t, 5*time.Second, "one open connection", func() bool { return ts.Stats().Connections == 1 })
	c.Close()
	testutil.WaitFor(t, 5*time.Second, "no open connection", func() bool { return ts.Stats().Connections == 0 })
	want := Stats{Connections: 0, Accepted: 2, Requests: 5, Errors: 2} // one keep-alive connection, then the raw one
	if got := ts.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}
