package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// handlerFunc adapts a function to Handler.
type handlerFunc func(ctx context.Context, cmd Command) (any, error)

func (f handlerFunc) Handle(ctx context.Context, cmd Command) (any, error) { return f(ctx, cmd) }

// echo answers every command with its name and arguments.
var echo = handlerFunc(func(_ context.Context, cmd Command) (any, error) {
	return map[string]any{"name": cmd.Name, "args": cmd.Args}, nil
})

// testServer is a server running on a real socket for one test.
type testServer struct {
	path   string
	srv    *Server
	cancel context.CancelFunc
	done   chan error // receives Serve's result
}

// startServer listens in a fresh short directory (which Listen creates) and
// serves h until the test ends.
func startServer(t *testing.T, h Handler, opts ...func(*Server)) *testServer {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "run", "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, path, h, opts...)
}

func serveOn(t *testing.T, ln net.Listener, path string, h Handler, opts ...func(*Server)) *testServer {
	t.Helper()
	srv := NewServer(h, nil)
	for _, o := range opts {
		o(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{path: path, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
			ts.done <- err // for tests that look again
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return ts
}

// wait returns Serve's result, failing the test if it takes too long.
func (ts *testServer) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ts.done:
		ts.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// dial opens a raw connection to the server.
func (ts *testServer) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// client dials the server with Dial.
func (ts *testServer) client(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readReply reads and decodes one reply line.
func readReply(t *testing.T, r *bufio.Reader) Reply {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read reply: %v (got %q)", err, line)
	}
	if strings.Count(string(line), "\n") != 1 {
		t.Fatalf("reply is not one line: %q", line)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return rep
}

// do runs one command with a client, failing the test on transport errors.
func do(t *testing.T, c *Client, line string) Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := c.Do(ctx, line)
	if err != nil {
		t.Fatalf("Do(%q): %v", line, err)
	}
	return rep
}
