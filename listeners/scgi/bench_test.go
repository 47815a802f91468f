package scgi

import (
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkSCGI sends sequential requests, each on a new UNIX connection as
// nginx does (SCGI has no keep-alive), to a trivial handler.
func BenchmarkSCGI(b *testing.B) {
	ts := startServer(b, "unix", Config{}, handlerDispatcher{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello\n")
	})})
	req := encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/bench?x=1", "SERVER_PROTOCOL", "HTTP/1.1",
		"HTTP_HOST", "bench.test", "REMOTE_ADDR", "127.0.0.1", "REMOTE_PORT", "4000", "HTTP_USER_AGENT", "bench")
	want := "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\n"
	buf := make([]byte, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("unix", ts.addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := io.ReadFull(c, buf[:len(want)])
		if err != nil || string(buf[:n]) != want {
			b.Fatalf("answer %q, %v", buf[:n], err)
		}
		if n, err := c.Read(buf); n != 0 || err != io.EOF {
			b.Fatalf("after the answer: %d bytes, %v", n, err)
		}
		c.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
