package pyhello_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testbin"
	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/kernel"
)

func TestMain(m *testing.M) { testbin.Main(m, func(*testbin.Builder) {}) }

// python is the interpreter the script's #! line names.
const python = "/usr/bin/python3"

// requirePython skips the test when python has no grpc, or fails it under
// CI, which installs python3-grpcio and python3-protobuf.
func requirePython(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import grpc, google.protobuf").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s cannot import grpc and protobuf (Debian: python3-grpcio python3-protobuf): %v\n%s", python, err, out)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// script returns pyhello.py with its VERSION set to version.
func script(t *testing.T, version string) []byte {
	t.Helper()
	src, err := os.ReadFile("pyhello.py")
	if err != nil {
		t.Fatal(err)
	}
	const line = "\nVERSION = \"v1\"\n"
	if !bytes.Contains(src, []byte(line)) {
		t.Fatalf("pyhello.py has no line %q", strings.TrimSpace(line))
	}
	return bytes.Replace(src, []byte(line), []byte("\nVERSION = \""+version+"\"\n"), 1)
}

// pyKernel is a kernel running in this process with pyhello as its plugin,
// at dir/plugins/pyhello.
type pyKernel struct {
	k      *kernel.Kernel
	dir    string
	logs   *testutil.LogRecorder
	base   string // the HTTP listener's URL
	script string // the plugin's path
}

// startKernel writes a configuration with settings (TOML lines) for
// pyhello, runs a kernel and waits until it is ready, or returns Run's
// error.
// The kernel is shut down when the test ends, and the test fails if a
// plugin process outlives it.
func startKernel(t *testing.T, settings string) (*pyKernel, error) {
	t.Helper()
	requirePython(t)
	lib, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pk := &pyKernel{dir: dir, logs: &testutil.LogRecorder{}, script: filepath.Join(dir, "plugins", "pyhello")}
	if err := os.Mkdir(filepath.Join(dir, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pk.script, script(t, "v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
[plugins.pyhello]
path = "plugins/pyhello"
env = { PYTHONPATH = %q }
drain_timeout = "10s"
[plugins.pyhello.settings]
%s

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "pyhello"
`, lib, settings)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := testutil.ShortDir(t)
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	k, err := kernel.New(kernel.Options{
		ConfigPath: cfgPath,
		DataDir:    filepath.Join(dir, "state"),
		Socket:     filepath.Join(run, "admin.sock"),
		Logger:     slog.New(pk.logs),
		Level:      level,
		Version:    "test",
		Getenv:     func(k string) string { return map[string]string{"XDG_RUNTIME_DIR": run}[k] },
	})
	if err != nil {
		return nil, err
	}
	pk.k = k
	done := make(chan error, 1)
	go func() { done <- k.Run(context.Background()) }()
	select {
	case <-k.Ready():
	case err := <-done:
		return nil, err
	case <-time.After(30 * time.Second):
		t.Fatal("kernel not ready after 30s")
	}
	t.Cleanup(func() {
		pids := pk.pids()
		k.Shutdown()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("kernel did not stop within 60s")
		}
		for _, pid := range pids {
			if testutil.Alive(pid) {
				t.Errorf("plugin pid %d outlived the kernel", pid)
			}
		}
		if t.Failed() {
			for _, r := range pk.logs.Find("") {
				t.Logf("kernel log: %s %s %v", r.Level, r.Message, r.Attrs)
			}
		}
	})
	for _, l := range k.Listeners() {
		if l.Name == "web" {
			pk.base = "http://" + l.Bound
		}
	}
	return pk, nil
}

// pids lists the pyhello processes, current and draining.
func (pk *pyKernel) pids() []int {
	var pids []int
	for _, p := range pk.k.Plugins() {
		pids = append(pids, p.PID)
		for _, d := range p.Draining {
			pids = append(pids, d.PID)
		}
	}
	return pids
}

// current is the serving pyhello's version and pid.
func (pk *pyKernel) current() (version string, pid int, generation uint64) {
	for _, p := range pk.k.Plugins() {
		if p.Name == "pyhello" {
			return p.Version, p.PID, p.Generation
		}
	}
	return "", 0, 0
}

// do sends one request and returns the status, the body and the response.
func do(t *testing.T, c *http.Client, method, url string, body []byte) (int, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return res.StatusCode, string(b), res
}

// TestPyhello: each of pyhello's answers, through a real kernel.
func TestPyhello(t *testing.T) {
	pk, err := startKernel(t, `greeting = "bonjour"`)
	if err != nil {
		t.Fatal(err)
	}
	_, pid, _ := pk.current()
	greeting := fmt.Sprintf("bonjour from v1 (python, pid %d)\n", pid)
	tests := []struct {
		name, method, path string
		code               int
		body               string
		header             [2]string
	}{
		{"root", "GET", "/", 200, greeting, [2]string{"Content-Type", "text/plain; charset=utf-8"}},
		{"query", "GET", "/?x=1", 200, greeting, [2]string{}},
		{"not found", "GET", "/nope", 404, "404 page not found\n", [2]string{}},
		{"post", "POST", "/", 405, "method not allowed\n", [2]string{"Allow", "GET, HEAD"}},
		{"echo get", "GET", "/echo", 405, "method not allowed\n", [2]string{"Allow", "POST, PUT"}},
		{"handler raises", "GET", "/fail", 500, "Internal Server Error\n", [2]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, res := do(t, http.DefaultClient, tt.method, pk.base+tt.path, nil)
			if code != tt.code || body != tt.body {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, code, body, tt.code, tt.body)
			}
			if k := tt.header[0]; k != "" && res.Header.Get(k) != tt.header[1] {
				t.Errorf("%s: %q, want %q", k, res.Header.Get(k), tt.header[1])
			}
		})
	}
	t.Run("head", func(t *testing.T) {
		code, body, res := do(t, http.DefaultClient, "HEAD", pk.base+"/", nil)
		if code != 200 || body != "" || res.ContentLength != int64(len(greeting)) {
			t.Errorf("HEAD / = %d %q, Content-Length %d; want 200, no body, %d", code, body, res.ContentLength, len(greeting))
		}
	})
	// A body larger than the kernel sends with the request's first frame,
	// and an answer larger than the credit it grants: both stream in
	// frames, and every byte comes back in order.
	for _, size := range []int{0, 1, 64 << 10, 3 << 20} {
		t.Run(fmt.Sprintf("echo %d", size), func(t *testing.T) {
			in := make([]byte, size)
			if _, err := rand.Read(in); err != nil {
				t.Fatal(err)
			}
			code, out, _ := do(t, http.DefaultClient, "POST", pk.base+"/echo", in)
			if code != 200 || out != string(in) {
				t.Errorf("POST /echo of %d bytes = %d with %d bytes back, equal %v", size, code, len(out), out == string(in))
			}
		})
	}
	// A client that goes away in the middle of its body: the kernel ends
	// the call (a Cancel frame, or the body's end with an error) and the
	// plugin drops it and goes on serving.
	t.Run("client gone mid-body", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(pk.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
		testutil.WaitFor(t, 10*time.Second, "the call in flight", func() bool { return pk.k.Plugins()[0].Inflight == 1 })
		conn.Close()
		testutil.WaitFor(t, 10*time.Second, "the call ended", func() bool { return pk.k.Plugins()[0].Inflight == 0 })
		if code, body, _ := do(t, http.DefaultClient, "GET", pk.base+"/", nil); code != 200 || body != greeting {
			t.Errorf("GET / after = %d %q", code, body)
		}
	})
	// The handler's exception reached the kernel's log through the Host
	// service the plugin dialled over the broker, not through its stderr.
	testutil.WaitFor(t, 10*time.Second, "the /fail record in the kernel's log", func() bool {
		for _, r := range pk.logs.Find("handler raised") {
			if r.Attrs["uri"] == "/fail" && r.Attrs["stream"] == "" && strings.Contains(r.Attrs["traceback"], "RuntimeError") {
				return true
			}
		}
		return false
	})
	// Nothing else went wrong in the plugin: no record of its own above
	// info, nothing unexpected on its stderr.
	for _, r := range pk.logs.Find("") {
		if r.Attrs["plugin"] != "pyhello" || r.Message == "handler raised" && r.Attrs["uri"] == "/fail" {
			continue
		}
		if r.Level > slog.LevelInfo || r.Attrs["stream"] != "" {
			t.Errorf("kernel log: %s %q %v", r.Level, r.Message, r.Attrs)
		}
	}
}

// TestPyhelloBadSettings: settings pyhello refuses fail its start, with
// pyhello's reason in the slot's last error.
func TestPyhelloBadSettings(t *testing.T) {
	for name, tt := range map[string]struct{ settings, want string }{
		"unknown key":    {`greting = "x"`, "unknown key 'greting'"},
		"empty greeting": {`greeting = ""`, "greeting must be a non-empty string"},
		"wrong type":     {`greeting = 3`, "greeting must be a non-empty string"},
	} {
		t.Run(name, func(t *testing.T) {
			pk, err := startKernel(t, tt.settings)
			if err != nil {
				t.Fatal(err)
			}
			p := pk.k.Plugins()[0]
			if p.State == "serving" || p.PID != 0 || !strings.Contains(p.LastError, tt.want) {
				t.Errorf("pyhello is %s (pid %d) with last error %q, want no process and %q", p.State, p.PID, p.LastError, tt.want)
			}
		})
	}
}

// TestPyhelloLoadAndSwap: many concurrent requests on the plugin's Calls
// streams all get the right answer, and swapping the script under load —
// by atomic rename, then by rewriting it in place — fails none of them.
func TestPyhelloLoadAndSwap(t *testing.T) {
	pk, err := startKernel(t, `greeting = "hello"`)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	const workers, each = 8, 100
	_, pid, _ := pk.current()
	want := fmt.Sprintf("hello from v1 (python, pid %d)\n", pid)
	var wg sync.WaitGroup
	var bad atomic.Int64
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if code, body, err := get(client, pk.base+"/"); err != nil || code != 200 || body != want {
					if bad.Add(1) == 1 {
						t.Errorf("GET / = %d %q %v, want 200 %q", code, body, err, want)
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("%d requests from %d clients in %v: %.0f requests/s", workers*each, workers, took, float64(workers*each)/took.Seconds())
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed", n, workers*each)
	}

	swaps := []struct {
		version string
		install func(b []byte) error
	}{
		{"v2", func(b []byte) error { // atomic rename, as an installer does
			tmp := filepath.Join(pk.dir, "plugins", ".pyhello.new")
			if err := os.WriteFile(tmp, b, 0o755); err != nil {
				return err
			}
			return os.Rename(tmp, pk.script)
		}},
		{"v3", func(b []byte) error { // rewritten in place, as cp does
			return os.WriteFile(pk.script, b, 0o755)
		}},
	}
	for _, sw := range swaps {
		t.Run("swap to "+sw.version, func(t *testing.T) {
			_, _, gen := pk.current()
			stop := make(chan struct{})
			var served, failed, fresh atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						code, body, err := get(client, pk.base+"/")
						switch {
						case err != nil || code != 200 || !strings.HasPrefix(body, "hello from v"):
							if failed.Add(1) == 1 {
								t.Errorf("GET / during the swap = %d %q %v", code, body, err)
							}
						case strings.HasPrefix(body, "hello from "+sw.version+" "):
							fresh.Add(1)
						}
						served.Add(1)
					}
				}()
			}
			// Let the load run before the swap, and go on after it until
			// the new version has answered plenty.
			testutil.WaitFor(t, 30*time.Second, "requests before the swap", func() bool { return served.Load() >= 200 })
			if err := sw.install(script(t, sw.version)); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 30*time.Second, sw.version+" serving", func() bool {
				v, _, g := pk.current()
				return v == sw.version && g == gen+1
			})
			testutil.WaitFor(t, 30*time.Second, sw.version+" answering", func() bool { return fresh.Load() >= 200 })
			close(stop)
			wg.Wait()
			t.Logf("swap to %s: %d requests, %d answered by %s, %d failed", sw.version, served.Load(), fresh.Load(), sw.version, failed.Load())
			if n := failed.Load(); n != 0 {
				t.Fatalf("%d of %d requests failed during the swap", n, served.Load())
			}
			_, pid, _ := pk.current()
			if code, body, err := get(client, pk.base+"/"); err != nil || code != 200 ||
				body != fmt.Sprintf("hello from %s (python, pid %d)\n", sw.version, pid) {
				t.Fatalf("after the swap GET / = %d %q %v", code, body, err)
			}
		})
	}
}

// get is a GET that reports errors instead of failing the test, for
// goroutines.
func get(c *http.Client, url string) (int, string, error) {
	res, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}
