package http

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// rawClient is one keep-alive connection that speaks HTTP/1.1 by hand.
type rawClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{c: c, r: bufio.NewReader(c)}
}

// get sends a GET of path and reads the answer.
func (rc *rawClient) get(path string) (int, string, error) {
	rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(rc.c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	res, err := nethttp.ReadResponse(rc.r, nil)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// closedAtOnce reports whether the server closed rc without a byte.
func (rc *rawClient) closedAtOnce(t testing.TB) {
	t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := rc.r.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read %d bytes, %v: want the connection closed at once", n, err)
	}
}

// TestMaxConnections: with MaxConnections open, a new connection is closed
// at once and counted; once one closes, a new one is served.
func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Config{MaxConnections: 2}, okDispatcher("hi"))
	var open []*rawClient
	for range 2 {
		rc := dialRaw(t, ts.addr)
		if code, body, err := rc.get("/"); err != nil || code != 200 || body != "hi" {
			t.Fatalf("GET within the limit: %d %q %v", code, body, err)
		}
		open = append(open, rc)
	}
	over := dialRaw(t, ts.addr)
	over.closedAtOnce(t)
	if st := ts.Stats(); st.Refused != 1 || st.Accepted != 2 {
		t.Errorf("Stats = %+v, want 1 refused, 2 accepted", st)
	}
	if !strings.Contains(ts.log.String(), "too many connections") {
		t.Errorf("no warning logged:\n%s", ts.log)
	}
	// The open ones are still served.
	if code, _, err := open[0].get("/"); err != nil || code != 200 {
		t.Fatalf("GET on an open connection after a refusal: %d %v", code, err)
	}

	open[1].c.Close()
	testutil.WaitFor(t, 5*time.Second, "one connection open", func() bool { return ts.Stats().Connections == 1 })
	rc := dialRaw(t, ts.addr)
	if code, body, err := rc.get("/"); err != nil || code != 200 || body != "hi" {
		t.Fatalf("GET after a connection closed: %d %q %v", code, body, err)
	}
	if st := ts.Stats(); st.Refused != 1 || st.Accepted != 3 || st.Connections != 2 {
		t.Errorf("Stats = %+v, want 1 refused, 3 accepted, 2 open", st)
	}
}

// TestMaxHeaderBytes: a request head beyond MaxHeaderBytes (net/http
// allows 4 KiB of slack) is answered 431 without reaching the dispatcher.
func TestMaxHeaderBytes(t *testing.T) {
	called := make(chan struct{}, 4)
	ts := startServer(t, Config{MaxHeaderBytes: 1024}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		called <- struct{}{}
		io.WriteString(w, "ok")
		return nil
	}))
	for _, tc := range []struct {
		name string
		size int
		want int
	}{
		{"under", 512, 200},
		{"over", 64 << 10, nethttp.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr)
			rc.c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(rc.c, "GET / HTTP/1.1\r\nHost: test\r\nX-Big: %s\r\n\r\n", strings.Repeat("h", tc.size))
			res, err := nethttp.ReadResponse(rc.r, nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("status %d, want %d", res.StatusCode, tc.want)
			}
		})
	}
	if got := len(called); got != 1 {
		t.Errorf("dispatcher called %d times, want once (for the small head)", got)
	}
}

// TestWriteTimeout: a client that never reads a large answer is cut off
// once WriteTimeout passes; the dispatcher's write fails, and the
// connection is closed.
func TestWriteTimeout(t *testing.T) {
	writeErr := make(chan error, 1)
	ts := startServer(t, Config{WriteTimeout: 200 * time.Millisecond}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return err
			}
		}
	}))
	rc := dialRaw(t, ts.addr)
	if _, err := io.WriteString(rc.c, "GET /big HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing.
	select {
	case err := <-writeErr:
		t.Logf("the dispatcher's write failed: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the answer to a client that does not read was not cut off")
	}
	testutil.WaitFor(t, 10*time.Second, "the connection closed", func() bool { return ts.Stats().Connections == 0 })
	// Draining what the socket buffers held ends in EOF or a reset, not a wait.
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, rc.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the client's connection is still open: %v", err)
	}
}

// TestNoAnswerNoEmpty200: a dispatcher that gives up without answering
// because the connection failed under it (here: a chunked body cut short
// by a half-close, which net/http reports by cancelling the request's
// context) gets the connection closed, not an empty 200.
func TestNoAnswerNoEmpty200(t *testing.T) {
	gaveUp := make(chan struct{})
	ts := startServer(t, Config{}, dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
		defer close(gaveUp)
		_, _ = io.ReadAll(r.Body)
		<-r.Context().Done()
		return nil
	}))
	rc := dialRaw(t, ts.addr)
	rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(rc.c, "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
	rc.c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(rc.r)
	if len(got) != 0 || isTimeout(err) {
		t.Fatalf("read %q, %v: want the connection closed without an answer", got, err)
	}
	<-gaveUp
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
