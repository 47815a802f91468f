package http

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	nethttp "net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// dispatchFunc adapts a function to the Dispatcher interface.
type dispatchFunc func(w nethttp.ResponseWriter, r *nethttp.Request) error

func (f dispatchFunc) Dispatch(w nethttp.ResponseWriter, r *nethttp.Request) error { return f(w, r) }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// checkGoroutines fails t if goroutines started during the test outlive it. Register it before anything else
// so that its cleanup runs last.
func checkGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before the test, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testServer is a Server serving on a loopback port, with a client of its own.
type testServer struct {
	*Server
	addr   string
	url    string
	log    *syncBuffer
	client *nethttp.Client
	tr     *nethttp.Transport

	serveErr  chan error
	serveOnce sync.Once
	served    error
}

// startServer serves d on 127.0.0.1:0 and shuts the server down, checking for leaks, when t ends.
func startServer(t testing.TB, cfg Config, d Dispatcher) *testServer {
	t.Helper()
	checkGoroutines(t)
	ts := &testServer{log: &syncBuffer{}, serveErr: make(chan error, 1)}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Name == "" {
		cfg.Name = t.Name()
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 1 << 20
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = New(cfg, d)
	ts.addr = ln.Addr().String()
	ts.url = "http://" + ts.addr
	go func() { ts.serveErr <- ts.Serve(ln) }()

	ts.tr = &nethttp.Transport{MaxIdleConnsPerHost: 16} // no proxy from the environment
	ts.client = &nethttp.Client{Transport: ts.tr, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		ts.tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := ts.waitServe(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log)
		}
	})
	return ts
}

// waitServe returns what Serve returned, waiting a few seconds for it.
func (ts *testServer) waitServe(t testing.TB) error {
	t.Helper()
	ts.serveOnce.Do(func() {
		select {
		case ts.served = <-ts.serveErr:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return")
		}
	})
	return ts.served
}

// get fetches path and returns the status and body, failing t on a transport error.
func (ts *testServer) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := ts.client.Get(ts.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, b.String()
}
