package kernel

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testbin"
	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/kernel/admin"
)

var bins *testbin.Builder

func TestMain(m *testing.M) { testbin.Main(m, func(b *testbin.Builder) { bins = b }) }

// Binaries the tests use, built once per test process.
func probeBin(t testing.TB, version string) string {
	return bins.Build(t, "probe-"+version, "./plugins/probe", version)
}

func helloBin(t testing.TB, version string) string {
	return bins.Build(t, "hello-"+version, "./plugins/hello", version)
}

func testdataBin(t testing.TB, name string) string {
	return bins.Build(t, name, "./internal/testbin/testdata/"+name, "")
}

// testKernel is a kernel running in this process with real plugin
// processes, in its own directories.
type testKernel struct {
	t       testing.TB
	k       *Kernel
	dir     string // holds config.toml and plugins/
	cfgPath string
	done    chan error
	logs    *logBuffer
}

// startKernel writes cfg as the configuration, copies each binary of
// plugins into dir/plugins/NAME (so tests can replace it), runs a kernel and
// waits until it is ready. The kernel is shut down when the test ends, and
// the test fails if a plugin process outlives it, or if the kernel leaves
// goroutines or file descriptors of this process behind. Clients a test
// closes in its own t.Cleanup are closed before that check, since cleanups
// run last registered first; plugin processes have descriptors of their
// own, which are not counted.
func startKernel(t testing.TB, cfg string, plugins map[string]string) *testKernel {
	t.Helper()
	return startKernelWith(t, cfg, plugins, nil)
}

// startKernelWith is startKernel with a hook that adjusts the kernel before
// it runs.
func startKernelWith(t testing.TB, cfg string, plugins map[string]string, adjust func(*Kernel)) *testKernel {
	t.Helper()
	// Taken before New, which opens the store and the admin socket.
	fds, err := testutil.OpenFDs()
	if err != nil {
		t.Logf("not checking for leaked file descriptors: %v", err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, bin := range plugins {
		copyFile(t, bin, filepath.Join(dir, "plugins", name))
	}
	tk := &testKernel{t: t, dir: dir, cfgPath: filepath.Join(dir, "config.toml"), logs: &logBuffer{}}
	if err := os.WriteFile(tk.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := testutil.ShortDir(t)
	env := map[string]string{"XDG_RUNTIME_DIR": run, "GORACE": "atexit_sleep_ms=0"}
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	k, err := New(Options{
		ConfigPath: tk.cfgPath,
		DataDir:    filepath.Join(dir, "state"),
		Socket:     filepath.Join(run, "admin.sock"),
		Logger:     slog.New(slog.NewTextHandler(tk.logs, &slog.HandlerOptions{Level: level})),
		Level:      level,
		Version:    "test",
		Getenv:     func(k string) string { return env[k] },
	})
	if err != nil {
		t.Fatal(err)
	}
	tk.k = k
	if adjust != nil {
		adjust(k)
	}
	tk.done = make(chan error, 1)
	goroutines := runtime.NumGoroutine()
	go func() { tk.done <- k.Run(context.Background()) }()
	t.Cleanup(func() {
		tk.stop()
		testutil.GoroutinesSettle(t, goroutines)
		testutil.FDsSettle(t, fds)
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOG") != "" {
			t.Logf("kernel log:\n%s", tk.logs.String())
		}
	})
	select {
	case <-k.Ready():
	case err := <-tk.done:
		tk.done <- err
		t.Fatalf("kernel did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("kernel not ready after 30s")
	}
	return tk
}

// stop shuts the kernel down and checks that it returned and left no
// plugin process behind.
func (tk *testKernel) stop() {
	t := tk.t
	pids := tk.pluginPids()
	tk.k.Shutdown()
	select {
	case err := <-tk.done:
		tk.done <- err
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("kernel did not stop within 60s")
		return
	}
	for _, pid := range pids {
		if testutil.Alive(pid) {
			t.Errorf("plugin pid %d outlived the kernel", pid)
		}
	}
}

// pluginPids lists the pids of every instance, current and draining.
func (tk *testKernel) pluginPids() []int {
	var pids []int
	for _, p := range tk.k.Plugins() {
		if p.PID != 0 {
			pids = append(pids, p.PID)
		}
		for _, d := range p.Draining {
			pids = append(pids, d.PID)
		}
	}
	return pids
}

func (tk *testKernel) plugin(name string) pluginInfo {
	for _, p := range tk.k.Plugins() {
		if p.Name == name {
			return p
		}
	}
	tk.t.Fatalf("no plugin %q", name)
	return pluginInfo{}
}

// url is the base URL of a listener.
func (tk *testKernel) url(listener string) string { return "http://" + tk.bound(listener) }

// bound is a listener's bound address.
func (tk *testKernel) bound(listener string) string {
	for _, l := range tk.k.Listeners() {
		if l.Name == listener {
			return l.Bound
		}
	}
	tk.t.Fatalf("no listener %q", listener)
	return ""
}

// ctl runs an admin command over the admin socket, as `switchyard ctl`.
func (tk *testKernel) ctl(line string) admin.Reply {
	tk.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := admin.Dial(ctx, tk.k.AdminSocket())
	if err != nil {
		tk.t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Do(ctx, line)
	if err != nil {
		tk.t.Fatal(err)
	}
	return r
}

// replace puts the executable src at dst: by rename (as `mv` and `install`
// do) or by rewriting dst in place (as `cp` and `go build -o` do), the
// latter in two halves with a pause between, so the watcher sees a
// half-written file first.
func replace(t testing.TB, src, dst string, inPlace bool) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !inPlace {
		tmp := dst + ".new"
		if err := os.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	half := len(b) / 2
	if _, err := f.Write(b[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := f.Write(b[half:]); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// get fetches url and returns status and body.
func get(c *http.Client, url string) (int, string, error) {
	res, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

func mustGet(t testing.TB, c *http.Client, url string) string {
	t.Helper()
	code, body, err := get(c, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	return body
}

// probePid extracts the pid from a probe answer "probe V pid N ...".
func probePid(body string) int {
	var v string
	var pid int
	if _, err := fmt.Sscanf(body, "probe %s pid %d", &v, &pid); err != nil {
		return 0
	}
	return pid
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// logBuffer collects the kernel's log for the test to print on failure,
// and copies it to standard error as it comes when SWITCHYARD_TEST_LOG is
// "stderr".
type logBuffer struct {
	testutil.SyncBuffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	if os.Getenv("SWITCHYARD_TEST_LOG") == "stderr" {
		os.Stderr.Write(p)
	}
	return l.SyncBuffer.Write(p)
}

func (l *logBuffer) contains(s string) bool {
	return strings.Contains(l.String(), s)
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// writeConfig replaces the kernel's configuration file with cfg.
func writeConfig(t testing.TB, tk *testKernel, cfg string) {
	t.Helper()
	if err := os.WriteFile(tk.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}
