package http

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	nethttp "net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// dispatchFunc adapts a function to the Dispatcher interface.
type dispatchFunc func(w nethttp.ResponseWriter, r *nethttp.Request) error

func (f dispatchFunc) Dispatch(w nethttp.ResponseWriter, r *nethttp.Request) error { return f(w, r) }

// testServer is a Server serving on a loopback port, with a client of its own.
type testServer struct {
	*Server
	addr   string
	url    string
	log    *testutil.SyncBuffer
	client *nethttp.Client
	tr     *nethttp.Transport

	serveErr  chan error
	serveOnce sync.Once
	served    error
}

// startServer serves d on 127.0.0.1:0 and shuts the server down, checking for leaks, when t ends.
func startServer(t testing.TB, cfg Config, d Dispatcher) *testServer {
	t.Helper()
	testutil.CheckGoroutines(t)
	ts := &testServer{log: &testutil.SyncBuffer{}, serveErr: make(chan error, 1)}
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
