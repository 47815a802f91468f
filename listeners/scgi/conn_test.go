package scgi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestEmptyConnection: a connection that closes without a byte (a health
// check) costs one Debug line, no warning and no error.
func TestEmptyConnection(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, Config{}, handlerDispatcher{h: echo})
			c := ts.dial(t)
			c.Close()
			testutil.WaitFor(t, 10*time.Second, "the connection to close", func() bool {
				return ts.Stats().Accepted == 1 && ts.Stats().Connections == 0
			})
			logs := ts.logs.String()
			if !strings.Contains(logs, "level=DEBUG msg=\"connection closed without a request\"") || strings.Contains(logs, "level=WARN") {
				t.Errorf("log:\n%s", logs)
			}
			if st := ts.Stats(); st.Errors != 0 || st.Requests != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestCutAnswers: an answer cut off by a panic after its head reaches the
// client short of its Content-Length, or reset; it never looks complete.
func TestCutAnswers(t *testing.T) {
	tests := []struct {
		name  string
		value any
		log   bool // an Error line with the stack
	}{
		{"ErrAbortHandler", http.ErrAbortHandler, false},
		{"other panic", "boom", true},
	}
	for _, tt := range tests {
		for _, network := range []string{"unix", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				ts := startServer(t, network, Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", "100")
					io.WriteString(w, "only ten b")
					if err := http.NewResponseController(w).Flush(); err != nil {
						t.Errorf("Flush: %v", err)
					}
					panic(tt.value)
				})})
				res, err := ts.roundTrip(t, encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/"))
				if err == nil && len(res.body) >= 100 {
					t.Errorf("a cut answer arrived whole: %+v", res)
				}
				testutil.WaitFor(t, 10*time.Second, "the exchange to end", func() bool { return ts.Stats().Connections == 0 })
				logs := ts.logs.String()
				if got := strings.Contains(logs, "level=ERROR") && strings.Contains(logs, "conn_test.go"); got != tt.log {
					t.Errorf("error with stack logged: %v, want %v\n%s", got, tt.log, logs)
				}
				if st := ts.Stats(); st.Errors != 1 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

// TestResponseController: the kernel's dispatcher enables full duplex,
// answers while the body is still coming, and stops its body reader in
// another goroutine with SetReadDeadline.
func TestResponseController(t *testing.T) {
	readErr := make(chan error, 1)
	ts := startServer(t, "tcp", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("EnableFullDuplex: %v", err)
		}
		got := make(chan []byte, 1)
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 10)
			_, err := io.ReadFull(r.Body, buf)
			got <- buf
			_, err = io.Copy(io.Discard, r.Body) // blocks: the rest never comes
			done <- err
		}()
		w.Header().Set("Content-Type", "text/plain")
		w.Write(<-got)
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		if err := rc.SetReadDeadline(time.Now()); err != nil {
			t.Errorf("SetReadDeadline: %v", err)
		}
		err := <-done
		readErr <- err
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
		io.WriteString(w, " and done")
	})})
	raw := encode(strings.Repeat("x", 100), "REQUEST_METHOD", "POST", "REQUEST_URI", "/")
	c := ts.dial(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write(raw[:len(raw)-90]) // 10 bytes of the body
	res, err := readResponse(c)
	if err != nil || res.status != 200 || string(res.body) != "xxxxxxxxxx and done" {
		t.Fatalf("%+v %v", res, err)
	}
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("body read stopped with %v, want a deadline error", err)
	}
}

// TestUnreadBody: a handler that answers without reading the body gets its
// answer to the client whole: the server reads the rest of the body before
// closing instead of resetting the connection under the answer.
func TestUnreadBody(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ignored your body")
			})})
			for range 5 {
				res, err := ts.roundTrip(t, encode(strings.Repeat("x", 4<<20), "REQUEST_METHOD", "POST", "REQUEST_URI", "/"))
				if err != nil || res.status != 200 || string(res.body) != "ignored your body" {
					t.Fatalf("%+v %v", res, err)
				}
			}
		})
	}
}

// TestRefusalsAreRead: a request refused before its body is read (413, or
// 503 without a dispatcher) still gets its answer to a client that keeps
// sending the body.
func TestRefusalsAreRead(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		d      Dispatcher
		status int
	}{
		{"413", Config{MaxBody: 1 << 10}, handlerDispatcher{h: echo}, 413},
		{"503", Config{}, nil, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "tcp", tt.cfg, tt.d)
			res, err := ts.roundTrip(t, encode(strings.Repeat("x", 4<<20), "REQUEST_METHOD", "POST", "REQUEST_URI", "/"))
			if err != nil || res.status != tt.status {
				t.Fatalf("%+v %v", res, err)
			}
			if st := ts.Stats(); st.Requests != 1 || st.Errors != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestResponseHeads(t *testing.T) {
	tests := []struct {
		name string
		h    http.HandlerFunc
		want string // the whole answer
	}{
		{"Location via WriteHeader", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusFound)
		}, "Status: 302 Found\r\nLocation: /elsewhere\r\n\r\n"},
		{"sniffed after an explicit WriteHeader", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			io.WriteString(w, "plain words")
		}, "Status: 201 Created\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain words"},
		{"no sniffing when the type is set empty", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>")
		}, "Status: 200 OK\r\n\r\n<html>"},
		{"Content-Length passed, values one per line, unknown status", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "2")
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
			w.Header().Set("Transfer-Encoding", "chunked")
			w.Header().Set("Status", "418")
			w.WriteHeader(299)
			io.WriteString(w, "ok")
			if _, err := io.WriteString(w, "more"); !errors.Is(err, http.ErrContentLength) {
				t.Errorf("write past Content-Length: %v", err)
			}
		}, "Status: 299 Status 299\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nX-Multi: a\r\nX-Multi: b\r\n\r\nok"},
		{"empty answer", func(w http.ResponseWriter, r *http.Request) {}, "Status: 200 OK\r\n\r\n"},
		{"header changes after WriteHeader are not sent", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(200)
			w.Header().Set("X-Late", "1")
			io.WriteString(w, "x")
		}, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "unix", Config{}, handlerDispatcher{h: tt.h})
			c := ts.dial(t)
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/"))
			got, err := io.ReadAll(c)
			if err != nil || string(got) != tt.want {
				t.Errorf("answer %q, %v\nwant   %q", got, err, tt.want)
			}
		})
	}
}

// TestShutdownConcurrent: Shutdowns called together all wait for the
// request in flight and all return nil once it is answered.
func TestShutdownConcurrent(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	ts := startServer(t, "tcp", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "late")
	})})
	c := ts.dial(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/"))
	<-entered
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() { errs <- ts.Shutdown(context.Background()) })
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	res, err := readResponse(c)
	if err != nil || string(res.body) != "late" {
		t.Fatalf("%+v %v", res, err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
}

// TestShutdownForcesInFlight: when Shutdown's ctx ends, a handler still at
// work — one that has not read its body, so only Shutdown can tell it — sees
// its context cancelled, and Shutdown returns once it has returned.
func TestShutdownForcesInFlight(t *testing.T) {
	entered := make(chan struct{})
	var cause error
	ts := startServer(t, "unix", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		cause = context.Cause(r.Context())
	})})
	c := ts.dial(t)
	c.Write(encode("0123456789", "REQUEST_METHOD", "POST", "REQUEST_URI", "/"))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if !errors.Is(cause, context.DeadlineExceeded) {
		t.Errorf("the handler's context ended with %v, want the Shutdown's deadline", cause)
	}
	if st := ts.Stats(); st.Connections != 0 {
		t.Errorf("%d connections open", st.Connections)
	}
}

// TestClientGoneCause: the request context of a client that went away
// says so.
func TestClientGoneCause(t *testing.T) {
	causes := make(chan error, 1)
	ts := startServer(t, "tcp", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		<-r.Context().Done()
		causes <- context.Cause(r.Context())
		io.WriteString(w, "nobody reads this")
	})})
	c := ts.dial(t)
	c.Write(encode("body", "REQUEST_METHOD", "POST", "REQUEST_URI", "/"))
	c.Close()
	if err := <-causes; !errors.Is(err, errClientGone) {
		t.Errorf("cause %v, want errClientGone", err)
	}
}

// TestAcceptAfterShutdownBegins: connections racing a Shutdown either get
// an answer or are closed, and Shutdown leaves no goroutine behind.
func TestAcceptAfterShutdownBegins(t *testing.T) {
	testutil.CheckGoroutines(t)
	for i := range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := New(Config{Name: "race" + strconv.Itoa(i)}, handlerDispatcher{h: echo})
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/"))
				b, err := io.ReadAll(c)
				if err == nil && len(b) > 0 && !bytes.HasPrefix(b, []byte("Status: 200 OK\r\n")) {
					t.Errorf("answer %q", b)
				}
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		wg.Wait()
		if st := s.Stats(); st.Connections != 0 {
			t.Errorf("%d connections open after Shutdown", st.Connections)
		}
	}
}
