package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testbin"
	"github.com/switchyard-dev/switchyard/internal/testutil"
)

var bins *testbin.Builder

func TestMain(m *testing.M) { testbin.Main(m, func(b *testbin.Builder) { bins = b }) }

// layout builds the kernel and the bundled plugins as `make build` lays
// them out: dir/bin/switchyard and dir/bin/plugins/NAME.
func layout(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	var wg sync.WaitGroup
	builds := map[string][2]string{
		"bin/switchyard":    {"switchyard", "./cmd/switchyard"},
		"bin/plugins/hello": {"hello", "./plugins/hello"},
		"bin/plugins/probe": {"probe", "./plugins/probe"},
		"bin/plugins/inbox": {"inbox", "./plugins/inbox"},
		"bin/plugins/zone":  {"zone", "./plugins/zone"},
		"bin/plugins/smtp":  {"smtp", "./plugins/smtp"},
		"bin/plugins/chat":  {"chat", "./plugins/chat"},
	}
	for dst, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := bins.BuildE(b[0], b[1], "v1")
			if err != nil {
				t.Error(err)
				return
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, dst)), 0o755); err != nil {
				t.Error(err)
				return
			}
			data, err := os.ReadFile(p)
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, dst), data, 0o755)
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// scripts/build puts the example zone beside the binary.
	zone, err := os.ReadFile(filepath.Join("..", "..", "plugins", "zone", "example.zone"))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "bin", "example.zone"), zone, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// kproc is a `switchyard serve` process.
type kproc struct {
	t      *testing.T
	dir    string
	bin    string
	socket string
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

const probeOnly = `
[plugins.probe]
path = "bin/plugins/probe"
drain_timeout = "3s"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`

// startServe starts `switchyard serve` in dir with cfg (or the embedded default
// when cfg is "") and extra arguments.
func startServe(t *testing.T, dir, cfg string, args ...string) *kproc {
	t.Helper()
	run := testutil.ShortDir(t)
	k := &kproc{t: t, dir: dir, bin: filepath.Join(dir, "bin", "switchyard"), socket: filepath.Join(run, "admin.sock"),
		stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	argv := []string{"serve", "-data", filepath.Join(dir, "state"), "-socket", k.socket, "-log-level", "debug"}
	if cfg != "" {
		p := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "-config", p)
	}
	k.cmd = exec.Command(k.bin, append(argv, args...)...)
	k.cmd.Env = testEnv("XDG_RUNTIME_DIR=" + run)
	k.cmd.Stderr = k.stderr
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		k.err = k.cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(func() {
		select {
		case <-k.done:
		default:
			_ = k.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-k.done:
			case <-time.After(30 * time.Second):
				_ = k.cmd.Process.Kill()
				<-k.done
			}
		}
		if t.Failed() {
			t.Logf("kernel stderr:\n%s", k.stderr.String())
		}
	})
	return k
}

// ready waits until the kernel answers `ctl status` with every plugin
// serving.
func (k *kproc) ready() {
	k.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-k.done:
			k.t.Fatalf("kernel exited: %v\n%s", k.err, k.stderr.String())
		default:
		}
		out, _, code := k.ctl("-json", "plugins")
		if code == 0 {
			var r struct {
				Data []struct{ State string } `json:"data"`
			}
			if json.Unmarshal([]byte(out), &r) == nil && len(r.Data) > 0 {
				ok := true
				for _, p := range r.Data {
					ok = ok && p.State == "serving"
				}
				if ok {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	k.t.Fatalf("kernel not ready after 30s\n%s", k.stderr.String())
}

// ctl runs `switchyard ctl -socket S args...`.
func (k *kproc) ctl(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	cmd := exec.Command(k.bin, append([]string{"ctl", "-socket", k.socket}, args...)...)
	cmd.Env = testEnv()
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		k.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

type pluginRow struct {
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	Generation int    `json:"generation"`
	Version    string `json:"version"`
	State      string `json:"state"`
}

func (k *kproc) plugins() []pluginRow {
	k.t.Helper()
	out, errOut, code := k.ctl("-json", "plugins")
	if code != 0 {
		k.t.Fatalf("ctl plugins: %d %s", code, errOut)
	}
	var r struct {
		OK   bool        `json:"ok"`
		Data []pluginRow `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || !r.OK {
		k.t.Fatalf("ctl -json plugins: %q %v", out, err)
	}
	return r.Data
}

// url returns the base URL of listener name.
func (k *kproc) url(name string) string {
	k.t.Helper()
	out, _, code := k.ctl("-json", "listeners")
	var r struct {
		Data []struct{ Name, Bound string } `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		k.t.Fatalf("ctl listeners: %q", out)
	}
	for _, l := range r.Data {
		if l.Name == name {
			return "http://" + l.Bound
		}
	}
	k.t.Fatalf("no listener %q in %q", name, out)
	return ""
}

// wait waits up to d for the kernel to exit and returns its exit code.
func (k *kproc) wait(d time.Duration) int {
	k.t.Helper()
	select {
	case <-k.done:
	case <-time.After(d):
		k.t.Fatalf("kernel did not exit within %v\n%s", d, k.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(k.err, &ee) {
		return ee.ExitCode()
	}
	if k.err != nil {
		k.t.Fatal(k.err)
	}
	return 0
}

// TestShutdownRightAfterStart sends SIGTERM within a few milliseconds of
// starting `switchyard serve`, twenty times: each exits 0 within 5 seconds
// and leaves no plugin process behind.
func TestShutdownRightAfterStart(t *testing.T) {
	dir := layout(t)
	for i := range 20 {
		k := startServe(t, dir, probeOnly)
		// The kernel can handle a signal once it has logged its first line
		// (before that, the Go runtime is still starting and SIGTERM's
		// default action applies); send it 0-4 ms after that.
		testutil.WaitFor(t, 10*time.Second, "the first log line", func() bool {
			return strings.Contains(k.stderr.String(), "switchyard starting")
		})
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		t0 := time.Now()
		if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := k.wait(5 * time.Second); code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, code, k.stderr.String())
		}
		if pids := testutil.ProcessesUnder(dir); len(pids) > 0 {
			t.Fatalf("run %d: plugin processes left after %v: %v\n%s", i, time.Since(t0), pids, k.stderr.String())
		}
	}
}

// TestShutdownCommand: `ctl shutdown` is answered, then the kernel exits 0.
func TestShutdownCommand(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, probeOnly)
	k.ready()
	out, errOut, code := k.ctl("shutdown")
	if code != 0 || !strings.Contains(out, "shutting down") {
		t.Fatalf("ctl shutdown: %d %q %q", code, out, errOut)
	}
	if code := k.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(k.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left behind: %v", err)
	}
}

// TestKernelKilled: when the kernel dies by SIGKILL, no plugin survives it.
func TestKernelKilled(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, probeOnly)
	k.ready()
	ps := k.plugins()
	if err := k.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	k.wait(5 * time.Second)
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range ps {
		for testutil.Alive(p.PID) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin %s pid %d survived the kernel's SIGKILL", p.Name, p.PID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A new kernel on the same state directory starts cleanly.
	k2 := startServe(t, dir, probeOnly)
	k2.ready()
}

// TestCtl drives the admin socket with `switchyard ctl`.
func TestCtl(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, probeOnly)
	k.ready()

	out, _, code := k.ctl("status")
	for _, want := range []string{"version:", "pid:", "uptime:", "listeners:", "plugins:", "probe", "serving"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("ctl status (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
	out, _, code = k.ctl("-json", "status")
	var st struct {
		OK   bool `json:"ok"`
		Data struct {
			Version   string  `json:"version"`
			PID       int     `json:"pid"`
			UptimeS   float64 `json:"uptime_s"`
			Listeners []any   `json:"listeners"`
			Plugins   []any   `json:"plugins"`
			Config    string  `json:"config"`
			Conns     *int64  `json:"connections"`
		} `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.OK || st.Data.PID != k.cmd.Process.Pid ||
		st.Data.Version != "v1" || len(st.Data.Listeners) != 1 || len(st.Data.Plugins) != 1 || st.Data.Conns == nil {
		t.Errorf("ctl -json status: %s", out)
	}

	out, _, code = k.ctl("listeners")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "web") {
		t.Errorf("ctl listeners: %d\n%s", code, out)
	}

	before := k.plugins()[0]
	out, errOut, code := k.ctl("reload", "probe")
	if code != 0 || !strings.Contains(out, "generation 2") {
		t.Errorf("ctl reload probe: %d %q %q", code, out, errOut)
	}
	after := k.plugins()[0]
	if after.Generation != before.Generation+1 || after.PID == before.PID {
		t.Errorf("after reload: %+v (before %+v)", after, before)
	}
	if body := httpGet(t, k.url("web")+"/"); !strings.Contains(body, fmt.Sprint(after.PID)) {
		t.Errorf("after reload answered %q, want pid %d", body, after.PID)
	}

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown plugin", []string{"reload", "nope"}, 1, `no plugin "nope"`},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"missing argument", []string{"reload"}, 2, "usage: reload PLUGIN"},
		{"json error", []string{"-json", "reload", "nope"}, 1, `"ok":false`},
		{"log level", []string{"log-level", "warn"}, 0, "warn"},
		{"bad log level", []string{"log-level", "loud"}, 1, "log level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := k.ctl(tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Errorf("ctl %v: exit %d, stdout %q, stderr %q; want exit %d mentioning %q", tc.args, code, out, errOut, tc.code, tc.want)
			}
		})
	}
}

// TestCtlNoKernel: ctl says where it looked and how to start the daemon.
func TestCtlNoKernel(t *testing.T) {
	dir := layout(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	cmd := exec.Command(filepath.Join(dir, "bin", "switchyard"), "ctl", "-socket", sock, "status")
	cmd.Env = testEnv()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("ctl with no kernel: %v", err)
	}
	for _, want := range []string{sock, "switchyard serve"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ctl error %q does not mention %q", out, want)
		}
	}
}

// TestSecondKernelRefused: a kernel refuses an admin socket another live
// kernel answers on, and leaves it alone.
func TestSecondKernelRefused(t *testing.T) {
	dir := layout(t)
	a := startServe(t, dir, probeOnly)
	a.ready()
	b := &kproc{t: t, bin: a.bin, socket: a.socket, stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cfg := strings.Replace(probeOnly, "bin/plugins/probe", filepath.Join(dir, "bin/plugins/probe"), 1)
	cfgPath := filepath.Join(t.TempDir(), "b.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(b.bin, "serve", "-config", cfgPath, "-data", t.TempDir(), "-socket", a.socket)
	b.cmd.Env = testEnv()
	b.cmd.Stderr = b.stderr
	if err := b.cmd.Run(); err == nil {
		t.Fatal("a second kernel started on a live admin socket")
	}
	if !strings.Contains(b.stderr.String(), "in use") {
		t.Errorf("second kernel's error: %s", b.stderr.String())
	}
	if _, _, code := a.ctl("status"); code != 0 {
		t.Error("the first kernel stopped answering")
	}
	// And a second kernel on the same state directory is refused too.
	c := exec.Command(a.bin, "serve", "-config", cfgPath, "-data", filepath.Join(dir, "state"), "-socket", filepath.Join(t.TempDir(), "c.sock"))
	c.Env = testEnv()
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "in use by another kernel") {
		t.Errorf("a second kernel on the same state dir: %v %s", err, out)
	}
}

// TestDefaultConfig runs `bin/switchyard serve` with no config, as the
// README's first command does: hello answers on 8080 and probe on 8081, the
// SCGI gateway in the runtime directory, zone on 5353, smtp on 2525,
// chat on 4000 with its timer, and metrics on 9464.
func TestDefaultConfig(t *testing.T) {
	dir := layout(t)
	pc := exec.Command(filepath.Join(dir, "bin", "switchyard"), "serve", "-print-config")
	pc.Env = testEnv()
	out, err := pc.CombinedOutput()
	if err != nil || !strings.Contains(string(out), filepath.Join(dir, "bin", "plugins", "hello")) {
		t.Fatalf("serve -print-config: %v\n%s", err, out)
	}
	k := startServe(t, dir, "")
	k.ready()
	if body := httpGet(t, "http://127.0.0.1:8080/"); !strings.HasPrefix(body, "hello from v1 (pid ") {
		t.Errorf("GET :8080/ = %q", body)
	}
	if body := httpGet(t, "http://127.0.0.1:8081/"); !strings.HasPrefix(body, "probe v1 pid ") {
		t.Errorf("GET :8081/ = %q", body)
	}
	// The SCGI gateway, in the runtime directory, by hand: a netstring of
	// headers, then the body.
	sock := filepath.Join(filepath.Dir(k.socket), "switchyard", "scgi.sock")
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("SCGI gateway: %v", err)
	}
	defer c.Close()
	hdr := "CONTENT_LENGTH\x005\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/message\x00"
	fmt.Fprintf(c, "%d:%s,hello", len(hdr), hdr)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	answer, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(answer), "Status: 201 Created\r\n") {
		t.Errorf("SCGI POST /message: %v %q", err, answer)
	}
	// The zone plugin with the example zone on :5353.
	q := new(dns.Msg)
	q.SetQuestion("www.example.test.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, "127.0.0.1:5353")
	if err != nil || len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "192.0.2.10") {
		t.Errorf("DNS www.example.test A: %v %v", r, err)
	}
	// The smtp plugin on :2525, with net/smtp's client.
	if err := smtp.SendMail("127.0.0.1:2525", nil, "a@example.test", []string{"b@example.test"},
		[]byte("Subject: default config\r\n\r\nhello\r\n")); err != nil {
		t.Errorf("SMTP to :2525: %v", err)
	}
	if keys := k.list("smtp/messages/"); len(keys) != 1 {
		t.Errorf("stored messages %v, want one", keys)
	}
	// chat on :4000 greets a telnet client.
	cc, err := net.Dial("tcp", "127.0.0.1:4000")
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	defer cc.Close()
	cc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if greeting, err := bufio.NewReader(cc).ReadString('\n'); err != nil || !strings.Contains(greeting, "chat") {
		t.Errorf("chat greeting %q %v", greeting, err)
	}
	if out, _, code := k.ctl("timers"); code != 0 || !strings.Contains(out, "announce") {
		t.Errorf("ctl timers: %d %q", code, out)
	}
	// Prometheus metrics on :9464.
	if body := httpGet(t, "http://127.0.0.1:9464/metrics"); !strings.Contains(body, `switchyard_listener_requests_total{listener="hello",protocol="http"} 1`) {
		t.Errorf("GET :9464/metrics lacks hello's one request:\n%.2000s", body)
	}
}

// TestCurl drives the kernel with curl: two requests on one keep-alive
// connection, and a chunked upload echoed back intact.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is required in CI")
		}
		t.Skip("curl not installed")
	}
	dir := layout(t)
	k := startServe(t, dir, probeOnly)
	k.ready()
	base := k.url("web")

	out, err := exec.Command(curl, "-sS", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", base+"/", base+"/echo").CombinedOutput()
	if err != nil || string(out) != "200 1\n200 0\n" {
		t.Errorf("curl keep-alive: %v %q, want two 200s on one connection", err, out)
	}

	body := bytes.Repeat([]byte("switchyard chunked upload\n"), 40000) // ~1 MiB
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(curl, "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+file, base+"/echo").Output()
	if err != nil {
		t.Fatalf("curl upload: %v", err)
	}
	var echo struct {
		Method           string   `json:"method"`
		BodyLen          int      `json:"body_len"`
		BodySHA256       string   `json:"body_sha256"`
		TransferEncoding []string `json:"transfer_encoding"`
	}
	if err := json.Unmarshal(out, &echo); err != nil {
		t.Fatalf("echo: %v\n%.300s", err, out)
	}
	sum := sha256.Sum256(body)
	if echo.Method != "POST" || echo.BodyLen != len(body) || echo.BodySHA256 != hex.EncodeToString(sum[:]) ||
		len(echo.TransferEncoding) != 1 || echo.TransferEncoding[0] != "chunked" {
		t.Errorf("echo of a chunked upload: %+v", echo)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", url, res.StatusCode, b, err)
	}
	return string(b)
}

// testEnv is a minimal environment for the processes a test starts. A
// race-enabled binary otherwise sleeps a second when it exits.
func testEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}, extra...)
}
