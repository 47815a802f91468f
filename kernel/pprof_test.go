package kernel

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestPprof: serve -pprof serves net/http/pprof, and an address still
// taken (as during an upgrade, by the old kernel) is waited for rather than
// keeping the kernel from starting.
func TestPprof(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := held.Addr().String()
	cfg := `
[plugins.hello]
path = "plugins/hello"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "hello"
`
	tk := startKernelWith(t, cfg, map[string]string{"hello": helloBin(t, "v1")}, func(k *Kernel) { k.opts.Pprof = addr })
	testutil.WaitFor(t, 10*time.Second, "the warning that the pprof address is taken", func() bool {
		return strings.Contains(tk.logs.String(), "pprof: cannot listen yet")
	})
	held.Close()
	var body string
	testutil.WaitFor(t, 10*time.Second, "pprof answering", func() bool {
		resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(body, "kernel.test") {
		t.Fatalf("cmdline: %q", body)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "goroutine profile:") {
		t.Fatalf("goroutine profile: %.200q", b)
	}
}
