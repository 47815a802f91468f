package scgi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// echo answers with what it saw of the request, as JSON.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), 400)
		return
	}
	_, hasLocal := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "uri": r.RequestURI, "path": r.URL.Path, "query": r.URL.RawQuery,
		"host": r.Host, "remote": r.RemoteAddr, "proto": r.Proto, "len": r.ContentLength,
		"header": r.Header, "body": string(body), "tls": r.TLS != nil, "local": hasLocal,
	})
})

func TestRequests(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, Config{}, handlerDispatcher{h: echo})
			res, err := ts.roundTrip(t, encode("hello",
				"REQUEST_METHOD", "POST", "REQUEST_URI", "/a/b?x=1&y=2", "QUERY_STRING", "x=1&y=2",
				"SERVER_PROTOCOL", "HTTP/1.1", "CONTENT_TYPE", "text/plain", "HTTP_CONTENT_TYPE", "text/plain",
				"HTTP_HOST", "example.test", "HTTP_X_FOO_BAR", "baz", "REMOTE_ADDR", "10.0.0.7", "REMOTE_PORT", "5555",
				"HTTPS", "on"))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(res.body, &got); err != nil || res.status != 200 {
				t.Fatalf("%d %q: %v", res.status, res.body, err)
			}
			want := map[string]any{
				"method": "POST", "uri": "/a/b?x=1&y=2", "path": "/a/b", "query": "x=1&y=2", "host": "example.test",
				"remote": "10.0.0.7:5555", "proto": "HTTP/1.1", "len": 5.0, "body": "hello", "tls": true, "local": true,
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			h := got["header"].(map[string]any)
			if fmt.Sprint(h["X-Foo-Bar"]) != "[baz]" || fmt.Sprint(h["Content-Type"]) != "[text/plain]" {
				t.Errorf("header %v", h)
			}
			if res.header.Get("Content-Type") != "application/json" {
				t.Errorf("answer head %v", res.header)
			}
		})
	}
}

func TestRequestDefaults(t *testing.T) {
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: echo})
	// No SERVER_PROTOCOL, no REQUEST_URI, no HTTP_HOST: what Apache and
	// hand-written clients may leave out.
	res, err := ts.roundTrip(t, encode("", "REQUEST_METHOD", "GET", "SCRIPT_NAME", "/app", "PATH_INFO", "/x",
		"QUERY_STRING", "q=1", "SERVER_NAME", "srv.test", "SERVER_PORT", "8080"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(res.body, &got)
	if got["uri"] != "/app/x?q=1" || got["host"] != "srv.test:8080" || got["proto"] != "HTTP/1.0" {
		t.Errorf("%d %s", res.status, res.body)
	}
}

func TestResponses(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name   string
		h      http.HandlerFunc
		method string
		status int
		header map[string]string
		body   string
		sum    [32]byte
	}{
		{name: "implicit 200 and sniffed type", h: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>hi") },
			status: 200, header: map[string]string{"Content-Type": "text/html; charset=utf-8"}, body: "<html>hi"},
		{name: "redirect", h: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/there", http.StatusFound) },
			status: 302, header: map[string]string{"Location": "/there"}, body: "<a href=\"/there\">Found</a>.\n\n"},
		{name: "odd status", h: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(599) }, status: 599},
		{name: "1xx then final", h: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(103); w.WriteHeader(201) }, status: 201},
		{name: "HEAD has no body", method: "HEAD", h: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "body") },
			status: 200, body: ""},
		{name: "no content", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(204)
			if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrBodyNotAllowed) {
				panic("write to a 204 body")
			}
		}, status: 204},
		{name: "trailers dropped", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "b")
			w.Header().Set("X-T", "v")
			w.Header().Set(http.TrailerPrefix+"X-U", "u")
		}, status: 200, header: map[string]string{"Trailer": ""}, body: "b"},
		{name: "1 MiB streamed with flushes", h: func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(big); i += 100 << 10 {
				w.Write(big[i:min(i+100<<10, len(big))])
				w.(http.Flusher).Flush()
			}
		}, status: 200, sum: sha256.Sum256(big)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "unix", Config{}, handlerDispatcher{h: tt.h})
			method := tt.method
			if method == "" {
				method = "GET"
			}
			res, err := ts.roundTrip(t, encode("", "REQUEST_METHOD", method, "REQUEST_URI", "/"))
			if err != nil {
				t.Fatal(err)
			}
			if res.status != tt.status {
				t.Errorf("status %d, want %d", res.status, tt.status)
			}
			for k, v := range tt.header {
				if got := res.header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tt.sum != [32]byte{} {
				if sha256.Sum256(res.body) != tt.sum {
					t.Errorf("body of %d bytes differs", len(res.body))
				}
			} else if string(res.body) != tt.body {
				t.Errorf("body %q, want %q", res.body, tt.body)
			}
		})
	}
}

// TestLargeBody echoes a 1 MiB request body.
func TestLargeBody(t *testing.T) {
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})})
	big := strings.Repeat("x", 1<<20)
	res, err := ts.roundTrip(t, encode(big, "REQUEST_METHOD", "POST", "REQUEST_URI", "/"))
	if err != nil || res.status != 200 || string(res.body) != big {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestDispatchFailures(t *testing.T) {
	tests := []struct {
		name   string
		d      Dispatcher
		status int // 0: the connection is cut without a whole answer
	}{
		{"error without an answer", handlerDispatcher{err: errors.New("no plugin")}, 502},
		{"error after its own answer", handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "unavailable", 503)
		}), err: errors.New("no plugin")}, 503},
		{"panic", handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") })}, 500},
		{"abort after the head", handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})}, 0},
		{"nil dispatcher", nil, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "tcp", Config{}, tt.d)
			res, err := ts.roundTrip(t, encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/"))
			if tt.status == 0 {
				if err == nil && res.status == 200 && string(res.body) == "partial" {
					t.Logf("the cut answer arrived whole; the reset came after it")
				}
				if st := ts.Stats(); st.Errors != 1 {
					t.Errorf("errors %d, want 1", st.Errors)
				}
				return
			}
			if err != nil || res.status != tt.status {
				t.Fatalf("%v %+v", err, res)
			}
			if st := ts.Stats(); st.Errors != 1 || st.Requests != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// malformedCases are requests the server must refuse: with Status: 400
// (status 400) or by closing the connection (status 0). Each logs a line.
var malformedCases = []struct {
	name   string
	raw    string
	status int
	log    string
}{
	{"length not a number", "x:CONTENT_LENGTH\x000\x00SCGI\x001\x00,", 400, "unexpected byte"},
	{"empty length", ":CONTENT_LENGTH\x000\x00,", 400, "unexpected byte"},
	{"leading zero", "024:CONTENT_LENGTH\x000\x00SCGI\x001\x00,", 400, "leading zero"},
	{"too many digits", "12345678901:", 400, "more than"},
	{"length over the limit", "99999:", 400, "more than"},
	{"missing colon", "24CONTENT_LENGTH\x000\x00SCGI\x001\x00,", 400, "unexpected byte"},
	{"missing comma", "24:CONTENT_LENGTH\x000\x00SCGI\x001\x00;", 400, "comma"},
	{"block without final NUL", "23:CONTENT_LENGTH\x000\x00SCGI\x001,", 400, "NUL"},
	{"name without value", ns("CONTENT_LENGTH\x000\x00SCGI\x00"), 400, "no value"},
	{"empty name", "27:CONTENT_LENGTH\x000\x00SCGI\x001\x00\x00x\x00,", 400, "empty header name"},
	{"duplicate name", "31:CONTENT_LENGTH\x000\x00SCGI\x001\x00SCGI\x001\x00,", 400, "twice"},
	{"empty block", "0:,", 400, "CONTENT_LENGTH is required"},
	{"content length not first", "24:SCGI\x001\x00CONTENT_LENGTH\x000\x00,", 400, "not CONTENT_LENGTH"},
	{"content length not a number", "25:CONTENT_LENGTH\x00-1\x00SCGI\x001\x00,", 400, "not a decimal"},
	{"no SCGI", "17:CONTENT_LENGTH\x000\x00,", 400, "no SCGI"},
	{"SCGI not 1", "24:CONTENT_LENGTH\x000\x00SCGI\x002\x00,", 400, "want 1"},
	{"no method", "24:CONTENT_LENGTH\x000\x00SCGI\x001\x00,", 400, "REQUEST_METHOD"},
	{"bad URI", ns("CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00REQUEST_URI\x00x y\x00"), 400, "REQUEST_URI"},
	{"truncated length", "24", 0, "unexpected EOF"},
	{"truncated block", "24:CONTENT_LEN", 0, "unexpected EOF"},
}

// ns wraps a header block in its netstring.
func ns(block string) string { return fmt.Sprintf("%d:%s,", len(block), block) }

func TestMalformed(t *testing.T) {
	ts := startServer(t, "unix", Config{MaxHeaderBytes: 1000}, handlerDispatcher{h: echo})
	for _, tt := range malformedCases {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.logs.String()
			c := ts.dial(t)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tt.raw)
			c.(*net.UnixConn).CloseWrite()
			res, err := readResponse(c)
			if tt.status == 0 {
				if err == nil {
					t.Errorf("got an answer %+v, want a closed connection", res)
				}
			} else if err != nil || res.status != tt.status {
				t.Errorf("got %+v %v, want Status %d", res, err, tt.status)
			}
			waitLog(t, ts, before, tt.log)
		})
	}
}

// waitLog waits for a log line containing want after the text before.
func waitLog(t *testing.T, ts *testServer, before, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := strings.TrimPrefix(ts.logs.String(), before)
		if strings.Contains(after, want) && strings.Contains(after, "level=WARN") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("no warning containing %q; log since: %s", want, after)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShortBody: the front server declares more body than it sends. The
// handler's read fails, the server does not hang, and no 200 comes back:
// the handler's own answer if it gives one, else nothing.
func TestShortBody(t *testing.T) {
	t.Run("handler answers", testShortBodyAnswered)
	t.Run("handler ignores the error", func(t *testing.T) {
		causes := make(chan error, 1)
		ts := startServer(t, "unix", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadAll(r.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("body read: %v, want io.ErrUnexpectedEOF", err)
			}
			causes <- context.Cause(r.Context())
		})})
		raw := encode(strings.Repeat("x", 100), "REQUEST_METHOD", "POST", "REQUEST_URI", "/")
		c := ts.dial(t)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write(raw[:len(raw)-40])
		c.(*net.UnixConn).CloseWrite()
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Errorf("answer %q, %v; want none", b, err)
		}
		if err := <-causes; !errors.Is(err, errClientGone) {
			t.Errorf("request context: %v, want errClientGone", err)
		}
	})
}

func testShortBodyAnswered(t *testing.T) {
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: echo})
	raw := encode(strings.Repeat("x", 100), "REQUEST_METHOD", "POST", "REQUEST_URI", "/")
	c := ts.dial(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write(raw[:len(raw)-40])
	c.(*net.UnixConn).CloseWrite()
	res, err := readResponse(c)
	if err != nil || res.status != 400 || !strings.Contains(string(res.body), "40 bytes short") {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestBodyTooLarge(t *testing.T) {
	called := false
	ts := startServer(t, "unix", Config{MaxBody: 10}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
	})})
	res, err := ts.roundTrip(t, encode(strings.Repeat("x", 11), "REQUEST_METHOD", "POST", "REQUEST_URI", "/"))
	if err != nil || res.status != 413 || called {
		t.Fatalf("%+v %v called=%v", res, err, called)
	}
}

// TestTimeouts: a client that sends nothing, or stalls mid-request, is
// closed at the timeout with a log line; so is one that stops reading.
func TestTimeouts(t *testing.T) {
	ts := startServer(t, "unix", Config{Timeout: 200 * time.Millisecond}, handlerDispatcher{h: echo})
	for _, partial := range []string{"", "30:CONTENT_LENGTH\x00", string(encode("abc", "REQUEST_METHOD", "POST", "REQUEST_URI", "/")[:40])} {
		before := ts.logs.String()
		c := ts.dial(t)
		io.WriteString(c, partial)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("stalled after %q: %v", partial, err)
		}
		if len(partial) < 40 && len(b) != 0 {
			t.Errorf("stalled after %q: got %q", partial, b)
		}
		if len(partial) < 40 {
			waitLog(t, ts, before, "not received in time")
		}
	}
}

// TestSlowReader: an answer the front server does not read is cut off at
// the timeout instead of holding the connection forever.
func TestSlowReader(t *testing.T) {
	done := make(chan struct{})
	ts := startServer(t, "unix", Config{Timeout: 200 * time.Millisecond}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		buf := make([]byte, 64<<10)
		for range 1000 { // 64 MiB, far more than socket buffers hold
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})})
	c := ts.dial(t)
	io.WriteString(c, string(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/")))
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler still writes to a client that reads nothing")
	}
}

// TestClientGone: a front server that closes the connection while the
// handler works cancels the request's context.
func TestClientGone(t *testing.T) {
	cancelled := make(chan struct{})
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(20 * time.Second):
		}
	})})
	c := ts.dial(t)
	io.WriteString(c, string(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/")))
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler's context was not cancelled when the client went away")
	}
}

// TestShutdownRightAfterServe: stopping a listener a moment after it
// started never deadlocks (the habitat gateway's race).
func TestShutdownRightAfterServe(t *testing.T) {
	testutil.CheckGoroutines(t)
	for i := range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := New(Config{}, handlerDispatcher{h: echo})
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		if i%2 == 0 {
			time.Sleep(time.Duration(i) * 20 * time.Microsecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("run %d: Shutdown: %v", i, err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("run %d: Serve: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: Serve did not return after Shutdown", i)
		}
	}
	// Shutdown before Serve, and twice.
	s := New(Config{}, nil)
	s.Shutdown(context.Background())
	s.Shutdown(context.Background())
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.Serve(ln); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("Serve after Shutdown left the listener open")
	}
}

// TestShutdownWaitsForReply: a Shutdown while a request is in flight lets
// its reply be written whole before it returns.
func TestShutdownWaitsForReply(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, strings.Repeat("reply ", 50000))
	})})
	c := ts.dial(t)
	io.WriteString(c, string(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/")))
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned with a request in flight: %v", err)
	default:
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var res *response
	var err error
	go func() {
		defer wg.Done()
		res, err = readResponse(c)
	}()
	close(release)
	wg.Wait()
	if err != nil || res.status != 200 || string(res.body) != strings.Repeat("reply ", 50000) {
		t.Fatalf("reply across Shutdown: %v, %d bytes", err, len(res.body))
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownDeadline: when ctx ends, Shutdown closes a stalled
// connection and returns.
func TestShutdownDeadline(t *testing.T) {
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: echo})
	c := ts.dial(t)
	io.WriteString(c, "30:CONTENT") // and stall
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if st := ts.Stats(); st.Connections != 0 {
		t.Errorf("%d connections still open", st.Connections)
	}
}

func TestStats(t *testing.T) {
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: echo})
	for range 3 {
		ts.roundTrip(t, encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/"))
	}
	ts.roundTrip(t, []byte("bad"))
	st := ts.Stats()
	if st.Accepted != 4 || st.Requests != 3 || st.Errors != 1 {
		t.Errorf("stats %+v", st)
	}
}
