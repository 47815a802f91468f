package scgi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// handlerDispatcher dispatches to an http.Handler, or fails with err.
type handlerDispatcher struct {
	h   http.Handler
	err error
}

func (d handlerDispatcher) Dispatch(w http.ResponseWriter, r *http.Request) error {
	if d.h != nil {
		d.h.ServeHTTP(w, r)
	}
	return d.err
}

// testServer runs a Server on a UNIX socket (or TCP) and shuts it down
// when the test ends.
type testServer struct {
	*Server
	network, addr string
	logs          *testutil.SyncBuffer
	served        chan error
}

func startServer(t testing.TB, network string, cfg Config, d Dispatcher) *testServer {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = testutil.ShortDir(t) + "/s.sock"
	}
	return startServerAt(t, network, addr, cfg, d)
}

// startServerAt is startServer on a given address.
func startServerAt(t testing.TB, network, addr string, cfg Config, d Dispatcher) *testServer {
	t.Helper()
	testutil.CheckGoroutines(t)
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	ts := &testServer{Server: New(cfg, d), network: network, addr: ln.Addr().String(), logs: logs, served: make(chan error, 1)}
	go func() { ts.served <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

func (ts *testServer) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial(ts.network, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// encode builds an SCGI request: CONTENT_LENGTH first, SCGI=1, then the
// given headers in order (name, value pairs).
func encode(body string, pairs ...string) []byte {
	all := append([]string{"CONTENT_LENGTH", strconv.Itoa(len(body)), "SCGI", "1"}, pairs...)
	return append(netstring(all...), body...)
}

func netstring(pairs ...string) []byte {
	var b bytes.Buffer
	for _, p := range pairs {
		b.WriteString(p)
		b.WriteByte(0)
	}
	return []byte(fmt.Sprintf("%d:%s,", b.Len(), b.String()))
}

// response is a parsed CGI answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// roundTrip sends raw on a new connection and reads the answer until the
// server closes it.
func (ts *testServer) roundTrip(t testing.TB, raw []byte) (*response, error) {
	t.Helper()
	c := ts.dial(t)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// Write while reading, as a front server does: a handler may answer
	// before it has read the whole body.
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(raw)
		wrote <- err
	}()
	res, err := readResponse(c)
	if werr := <-wrote; err == nil && werr != nil {
		err = werr
	}
	return res, err
}

func readResponse(r io.Reader) (*response, error) {
	all, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, io.EOF
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(all)))
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("reading the CGI head of %q: %w", all, err)
	}
	res := &response{header: http.Header(h)}
	st := res.header.Get("Status")
	if res.status, err = strconv.Atoi(strings.SplitN(st, " ", 2)[0]); err != nil {
		return nil, fmt.Errorf("bad Status %q", st)
	}
	i := bytes.Index(all, []byte("\r\n\r\n"))
	res.body = all[i+4:]
	return res, nil
}
