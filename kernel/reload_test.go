package kernel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

const reloadBase = `
[plugins.probe]
path = "plugins/probe"
drain_timeout = "5s"

[plugins.hello]
path = "plugins/hello"

[[listeners]]
name = "keep"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "gone"
protocol = "http"
address = "127.0.0.1:0"
plugin = "hello"

[[listeners]]
name = "tuned"
protocol = "http"
address = "127.0.0.1:0"
plugin = "hello"
max_body = 1000
`

// TestReloadConfig adds a listener, removes one, changes a plugin's path
// and points a listener at another plugin. The unchanged listener keeps its
// socket: the same listening fd, and no connection refused at any moment.
func TestReloadConfig(t *testing.T) {
	probe1, probe2 := probeBin(t, "v1"), probeBin(t, "v2")
	tk := startKernel(t, reloadBase, map[string]string{"probe": probe1, "hello": helloBin(t, "v1"), "probe2": probe2})
	keepURL, goneURL := tk.url("keep"), tk.url("gone")
	keepSock := tk.k.listeners["keep"].sock
	keepFD := listenerFD(t, keepSock)
	tunedURL, tunedSock := tk.url("tuned"), tk.k.listeners["tuned"].sock
	c := &http.Client{Timeout: 10 * time.Second}
	mustGet(t, c, goneURL+"/")

	// Dial the kept listener continuously through the reload.
	var refused, dials atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		addr := strings.TrimPrefix(keepURL, "http://")
		for {
			select {
			case <-stop:
				return
			default:
			}
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					refused.Add(1)
				}
				continue
			}
			dials.Add(1)
			conn.Close()
		}
	}()

	next := strings.Replace(reloadBase, `path = "plugins/probe"`, `path = "plugins/probe2"`, 1)
	next = strings.Replace(next, `name = "gone"`, `name = "added"`, 1)
	next = strings.Replace(next, `max_body = 1000`, `max_body = 2000`, 1)
	next += `
[[listeners]]
name = "hello2"
protocol = "http"
address = "127.0.0.1:0"
plugin = "hello"
`
	if err := os.WriteFile(tk.cfgPath, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	r := tk.ctl("reload-config")
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if !r.OK {
		t.Fatalf("reload-config: %s", r.Error)
	}
	t.Logf("reload-config: %s", r.Data)

	if n := refused.Load(); n != 0 {
		t.Errorf("%d of %d connections to the kept listener were refused", n, n+dials.Load())
	}
	l := tk.k.listeners["keep"]
	if l.sock != keepSock || listenerFD(t, l.sock) != keepFD {
		t.Error("the kept listener's socket changed")
	}
	if tk.url("keep") != keepURL {
		t.Errorf("kept listener moved from %s to %s", keepURL, tk.url("keep"))
	}
	// The listener with new settings has a new front end on the same socket.
	if tk.k.listeners["tuned"].sock != tunedSock || tk.url("tuned") != tunedURL {
		t.Error("the retuned listener's socket changed")
	}
	if !strings.Contains(string(r.Data), `"listeners_replaced":["tuned"]`) {
		t.Errorf("tuned was not replaced: %s", r.Data)
	}
	req, _ := http.NewRequest("POST", tunedURL+"/", strings.NewReader(strings.Repeat("x", 1500)))
	if res, err := c.Do(req); err != nil || res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("1500-byte POST to the retuned listener: %v %v, want hello's 405 (max_body is 2000 now)", res, err)
	} else {
		res.Body.Close()
	}
	// The changed path started a new process: v2 answers on the kept socket.
	if body := mustGet(t, c, keepURL+"/"); !strings.HasPrefix(body, "probe v2 ") {
		t.Errorf("kept listener answers %q, want probe v2", body)
	}
	if p := tk.plugin("probe"); p.Generation != 2 || p.Version != "v2" {
		t.Errorf("probe: generation %d version %s, want 2 and v2", p.Generation, p.Version)
	}
	// The removed listener's socket is closed.
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(goneURL, "http://"), time.Second); err == nil {
		t.Error("the removed listener still accepts connections")
	}
	// The added listeners answer.
	for _, name := range []string{"added", "hello2"} {
		if body := mustGet(t, c, tk.url(name)+"/"); !strings.HasPrefix(body, "hello from v1") {
			t.Errorf("%s answers %q", name, body)
		}
	}
}

// TestReloadConfigRefused: a configuration that does not parse, or whose
// new plugin cannot start, or whose new address is taken, changes nothing.
func TestReloadConfigRefused(t *testing.T) {
	tk := startKernel(t, reloadBase, map[string]string{"probe": probeBin(t, "v1"), "hello": helloBin(t, "v1")})
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cases := map[string]string{
		"unknown key":    reloadBase + "\nbogus = 1\n",
		"missing plugin": strings.Replace(reloadBase, `plugin = "hello"`, `plugin = "nope"`, 1),
		"broken new plugin": reloadBase + `
[plugins.broken]
path = "plugins/nothing-here"
[[listeners]]
name = "b"
protocol = "http"
address = "127.0.0.1:0"
plugin = "broken"
`,
		"address taken": reloadBase + `
[[listeners]]
name = "b"
protocol = "http"
address = "` + taken.Addr().String() + `"
plugin = "hello"
`,
	}
	before := toJSON(tk.k.Listeners())
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(tk.cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			r := tk.ctl("reload-config")
			if r.OK {
				t.Fatalf("reload-config accepted a bad config: %s", r.Data)
			}
			t.Logf("refused: %s", r.Error)
			if got := toJSON(tk.k.Listeners()); got != before {
				t.Errorf("listeners changed:\n%s\nwant\n%s", got, before)
			}
			if len(tk.k.Plugins()) != 2 {
				t.Errorf("plugins: %s", toJSON(tk.k.Plugins()))
			}
		})
	}
}

// listenerFD returns the file descriptor number of a socket's listener.
func listenerFD(t *testing.T, s *socket) uintptr {
	t.Helper()
	sc, ok := s.ln.(syscall.Conn)
	if !ok {
		t.Fatalf("%T has no raw conn", s.ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestShutdownRightAfterStart starts and stops a kernel twenty times, the
// stop coming within milliseconds of the start: each Run returns within 5
// seconds and leaves no plugin process.
func TestShutdownRightAfterStart(t *testing.T) {
	probe := probeBin(t, "v1")
	for i := range 20 {
		dir := t.TempDir()
		if err := os.MkdirAll(dir+"/plugins", 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, probe, dir+"/plugins/probe")
		cfg := probeConfig("")
		if i%2 == 1 {
			// The SCGI front end too: the habitat gateway's shutdown race.
			cfg = strings.Replace(cfg, `protocol = "http"`, `protocol = "scgi"`, 1)
		}
		if err := os.WriteFile(dir+"/config.toml", []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		run := testutil.ShortDir(t)
		logs := &logBuffer{}
		k, err := New(Options{
			ConfigPath: dir + "/config.toml",
			DataDir:    dir + "/state",
			Socket:     run + "/admin.sock",
			Logger:     newTestLogger(logs),
			Getenv: func(k string) string {
				return map[string]string{"XDG_RUNTIME_DIR": run, "GORACE": "atexit_sleep_ms=0"}[k]
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- k.Run(context.Background()) }()
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		t0 := time.Now()
		k.Shutdown()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d: no exit within 5s of Shutdown\n%s", i, logs.String())
		}
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("run %d: stopped after %v", i, d)
		}
		if pids := testutil.ProcessesUnder(dir); len(pids) > 0 {
			t.Fatalf("run %d: plugin processes left: %v\n%s", i, pids, logs.String())
		}
		if _, err := os.Stat(run + "/admin.sock"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run %d: admin socket left behind (%v)", i, err)
		}
	}
}

// TestReloadKeepsNewSnapshot: a reload that starts one plugin and swaps
// another must not garbage-collect the new plugin's executable, or its
// first crash could not be restarted.
func TestReloadKeepsNewSnapshot(t *testing.T) {
	base := `
[plugins.probe]
path = "plugins/probe"

[[listeners]]
name = "keep"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`
	next := strings.Replace(base, `path = "plugins/probe"`, `path = "plugins/probe"
[plugins.probe.settings]
x = 1`, 1) + `
[plugins.p2]
path = "plugins/probe2"

[[listeners]]
name = "p2"
protocol = "http"
address = "127.0.0.1:0"
plugin = "p2"
`
	tk := startKernel(t, base, map[string]string{"probe": probeBin(t, "v1"), "probe2": probeBin(t, "v2")})
	if err := os.WriteFile(tk.cfgPath, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := tk.ctl("reload-config"); !r.OK {
		t.Fatal(r.Error)
	}
	if _, err := os.Stat(filepath.Join(tk.k.snapDir, tk.plugin("p2").SHA256)); err != nil {
		t.Fatalf("the running p2's snapshot is gone: %v", err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	old := tk.plugin("p2")
	get(c, tk.url("p2")+"/crash")
	testutil.WaitFor(t, 10*time.Second, "p2 to restart after its crash", func() bool {
		p := tk.plugin("p2")
		return p.State == stateServing && p.PID != old.PID
	})
}

// TestReloadDuringShutdown: a reload under way when shutdown begins either
// completes before the kernel takes stock or is aborted; nothing it started
// outlives Run.
func TestReloadDuringShutdown(t *testing.T) {
	base := `
[plugins.probe]
path = "plugins/probe"
drain_timeout = "5s"

[[listeners]]
name = "keep"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`
	next := base + `
[plugins.p2]
path = "plugins/probe2"

[[listeners]]
name = "late"
protocol = "http"
address = "127.0.0.1:0"
plugin = "p2"
`
	tk := startKernel(t, base, map[string]string{"probe": probeBin(t, "v1"), "probe2": probeBin(t, "v2")})
	if err := os.WriteFile(tk.cfgPath, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	slow := make(chan struct{})
	go func() {
		defer close(slow)
		get(&http.Client{}, tk.url("keep")+"/slow?ms=1000") // keeps the shutdown busy
	}()
	testutil.WaitFor(t, 5*time.Second, "the slow call", func() bool { return tk.plugin("probe").Inflight > 0 })
	res := make(chan error, 1)
	go func() {
		_, err := tk.k.ReloadConfig(context.Background())
		res <- err
	}()
	time.Sleep(3 * time.Millisecond)
	tk.k.Shutdown()
	err := <-tk.done
	tk.done <- err
	<-slow
	t.Logf("Run: %v; reload: %v", err, <-res)
	tk.k.mu.Lock()
	l, s := tk.k.listeners["late"], tk.k.slots["p2"]
	tk.k.mu.Unlock()
	if l != nil {
		if c, err := net.Dial("tcp", l.sock.ln.Addr().String()); err == nil {
			c.Close()
			t.Error("the reload's listener still accepts after Run returned")
		}
	}
	if s != nil {
		if p := s.info(); p.PID != 0 && testutil.Alive(p.PID) {
			t.Errorf("the reload's plugin (pid %d, %s) outlived Run", p.PID, p.State)
		}
	}
	if pids := testutil.ProcessesUnder(tk.dir); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
}

// TestReloadWhileListing: reloads and `ctl listeners` at the same time
// (for the race detector).
func TestReloadWhileListing(t *testing.T) {
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": probeBin(t, "v1")})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			_ = tk.k.Listeners()
		}
	}()
	for range 5 {
		if _, err := tk.k.ReloadConfig(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}
