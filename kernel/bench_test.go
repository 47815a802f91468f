package kernel

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkHTTPThroughPlugin measures requests to hello through the kernel
// and the plugin process, and to the same hello binary serving its handler
// in-process with net/http (SWITCHYARD_STANDALONE), in the same run: b.N
// requests each, from 50 parallel keep-alive clients in this process. It
// reports both rates and their ratio. scripts/bench measures the same with
// wrk from outside.
func BenchmarkHTTPThroughPlugin(b *testing.B) {
	hello := helloBin(b, "bench")
	tk := startKernel(b, `
[plugins.hello]
path = "plugins/hello"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "hello"
`, map[string]string{"hello": hello})
	baseline := standalone(b, hello)

	b.ResetTimer()
	t0 := time.Now()
	benchGet(b, tk.url("web")+"/")
	plugin := time.Since(t0)
	t0 = time.Now()
	benchGet(b, baseline+"/")
	inProcess := time.Since(t0)
	b.StopTimer()

	n := float64(b.N)
	b.ReportMetric(n/plugin.Seconds(), "plugin-req/s")
	b.ReportMetric(n/inProcess.Seconds(), "inprocess-req/s")
	b.ReportMetric(inProcess.Seconds()/plugin.Seconds(), "ratio")
}

// standalone runs a plugin binary serving its HTTP handler itself and
// returns its base URL.
func standalone(b *testing.B, bin string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin)
	cmd.Env = []string{"SWITCHYARD_STANDALONE=" + addr, "GORACE=atexit_sleep_ms=0"}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	url := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; {
		if res, err := http.Get(url + "/"); err == nil {
			res.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			b.Fatal(fmt.Errorf("standalone %s did not answer", bin))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchGet makes b.N GETs of url from 50 parallel keep-alive clients.
func benchGet(b *testing.B, url string) {
	var failed, next atomic.Int64
	done := make(chan struct{})
	for range 50 {
		go func() {
			defer func() { done <- struct{}{} }()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			for next.Add(1) <= int64(b.N) {
				res, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	for range 50 {
		<-done
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d requests failed", n)
	}
}
