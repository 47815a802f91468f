package http

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	nethttp "net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkServer compares requests/s of a trivial handler served through a Server with the same handler on a
// bare net/http.Server, in the same run, over keep-alive connections from concurrent clients.
func BenchmarkServer(b *testing.B) {
	handler := nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello\n")
	})
	ts := startServer(b, Config{Logger: slog.New(slog.DiscardHandler)},
		dispatchFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) error {
			handler.ServeHTTP(w, r)
			return nil
		}))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bare := &nethttp.Server{Handler: handler, ErrorLog: log.New(io.Discard, "", 0)}
	bareDone := make(chan struct{})
	go func() {
		defer close(bareDone)
		bare.Serve(ln)
	}()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bare.Shutdown(ctx)
		<-bareDone
	})
	bareURL := "http://" + ln.Addr().String() + "/"

	workers := 4 * runtime.GOMAXPROCS(0)
	// load sends n GET requests to url from workers goroutines and returns how long they took.
	load := func(url string, n int) time.Duration {
		tr := &nethttp.Transport{MaxIdleConnsPerHost: workers}
		defer tr.CloseIdleConnections()
		client := &nethttp.Client{Transport: tr}
		var left atomic.Int64
		left.Store(int64(n))
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}

	b.ResetTimer()
	// Alternate halves so that drift in machine load touches both servers alike.
	half := b.N / 2
	tServer := load(ts.url+"/", half)
	tBare := load(bareURL, half)
	tServer += load(ts.url+"/", b.N-half)
	tBare += load(bareURL, b.N-half)
	b.StopTimer()

	serverRate := float64(b.N) / tServer.Seconds()
	bareRate := float64(b.N) / tBare.Seconds()
	b.ReportMetric(serverRate, "server-req/s")
	b.ReportMetric(bareRate, "bare-req/s")
	b.ReportMetric(serverRate/bareRate, "ratio")
}
