package host

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
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testbin"
	"github.com/switchyard-dev/switchyard/internal/testutil"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// helperEnv turns the test binary into a helper process (see TestMain).
const helperEnv = "SWITCHYARD_HOST_TEST_HELPER"

// bins are the executables TestMain builds.
var bins struct {
	probe, exit1, hang, garbage string
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "pdeathsig" {
		pdeathsigHelper()
		return
	}
	testbin.Main(m, func(b *testbin.Builder) {
		for _, x := range []struct {
			dst       *string
			name, pkg string
		}{
			{&bins.probe, "probe", "./plugins/probe"},
			{&bins.exit1, "exit1", "./internal/testbin/testdata/exit1"},
			{&bins.hang, "hang", "./internal/testbin/testdata/hang"},
			{&bins.garbage, "garbage", "./internal/testbin/testdata/garbage"},
		} {
			version := ""
			if x.name == "probe" {
				version = "test"
			}
			p, err := b.BuildE(x.name, x.pkg, version)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			*x.dst = p
		}
	})
}

// testSpec is a Spec for the program at path, logging to the recorder it
// returns. The recorder must not log to t: go-plugin's stdio goroutine may
// log after Kill, once the test has ended.
func testSpec(t *testing.T, path string) (Spec, *testutil.LogRecorder) {
	rec := &testutil.LogRecorder{}
	return Spec{
		Path:         path,
		Env:          []string{"PATH=/usr/bin:/bin"},
		SocketDir:    testutil.ShortDir(t),
		StartTimeout: 30 * time.Second,
		Logger:       slog.New(rec),
	}, rec
}

// emptyDir fails t unless dir has nothing in it.
func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s left behind in the socket directory", e.Name())
	}
}

// alive reports whether pid is a process that has not been reaped.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// startProbe starts probe and makes it ready for calls, as the kernel does.
func startProbe(t *testing.T, spec Spec) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if _, err := p.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	err = p.Configure(ctx, &proto.ConfigureRequest{
		Slot:       "probe",
		Generation: 1,
		Listeners:  []*proto.Listener{{Name: "web", Protocol: "http", Address: "127.0.0.1:0"}},
		LogLevel:   int32(slog.LevelDebug),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(2); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveProbe puts p behind a real HTTP server, answering errors as the
// kernel does. done receives each ServeHTTP's error once it has returned.
func serveProbe(t *testing.T, p *Process) (srv *httptest.Server, done <-chan error) {
	t.Helper()
	ch := make(chan error, 100)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		err := p.ServeHTTP(ctx, w, r, "web")
		ch <- err
		switch {
		case err == nil:
		case errors.Is(err, ErrAborted):
			panic(http.ErrAbortHandler)
		default:
			http.Error(w, err.Error(), StatusFor(err))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestProcessServe(t *testing.T) {
	t.Parallel()
	spec, _ := testSpec(t, bins.probe)
	spec.SHA256 = fileSHA256(t, bins.probe)
	p := startProbe(t, spec)
	pid := p.Pid()
	if pid <= 0 || !alive(pid) {
		t.Fatalf("pid %d is not a live process", pid)
	}
	d, err := p.Describe(context.Background())
	if err != nil || d.GetName() != "probe" || d.GetVersion() != "test" || strings.Join(d.GetProtocols(), ",") != "http,dns,line,timer" {
		t.Fatalf("Describe: %v %v", d, err)
	}
	srv, done := serveProbe(t, p)
	id := fmt.Sprintf("probe test pid %d", pid)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<17) // 2 MiB
	bigSum := sha256.Sum256(big)

	tests := []struct {
		name, method, path string
		body               []byte
		check              func(t *testing.T, res *http.Response, body []byte)
	}{
		{
			name: "root", method: "GET", path: "/",
			check: func(t *testing.T, res *http.Response, body []byte) {
				if res.StatusCode != 200 || string(body) != id+"\n" {
					t.Errorf("%d %q, want %q", res.StatusCode, body, id)
				}
				if res.ContentLength != int64(len(id)+1) {
					t.Errorf("Content-Length %d", res.ContentLength)
				}
			},
		},
		{
			name: "echo with a streamed body", method: "POST", path: "/echo?q=%2F1", body: big,
			check: func(t *testing.T, res *http.Response, body []byte) {
				var e struct {
					Method, URI, Listener, Host string
					BodyLen                     int    `json:"body_len"`
					BodySHA256                  string `json:"body_sha256"`
					ContentLength               int64  `json:"content_length"`
					RemoteAddr                  string `json:"remote_addr"`
				}
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("%v: %.300s", err, body)
				}
				if e.Method != "POST" || e.URI != "/echo?q=%2F1" || e.Listener != "web" || e.BodyLen != len(big) ||
					e.BodySHA256 != hex.EncodeToString(bigSum[:]) || e.ContentLength != int64(len(big)) ||
					!strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") || e.Host != strings.TrimPrefix(srv.URL, "http://") {
					t.Errorf("echo: %+v", e)
				}
			},
		},
		{
			name: "big answer", method: "GET", path: "/big?bytes=3000000",
			check: func(t *testing.T, res *http.Response, body []byte) {
				if res.StatusCode != 200 || len(body) != 3000000 {
					t.Errorf("%d, %d bytes", res.StatusCode, len(body))
				}
			},
		},
		{
			name: "status", method: "GET", path: "/status/418",
			check: func(t *testing.T, res *http.Response, body []byte) {
				if res.StatusCode != 418 || string(body) != id+" status 418\n" {
					t.Errorf("%d %q", res.StatusCode, body)
				}
			},
		},
		{
			name: "trailers", method: "GET", path: "/trailer",
			check: func(t *testing.T, res *http.Response, body []byte) {
				if res.Trailer.Get("X-Declared") != "declared" || res.Trailer.Get("X-Late") != "late" {
					t.Errorf("trailers %v", res.Trailer)
				}
			},
		},
		{
			name: "deadline crosses", method: "GET", path: "/deadline",
			check: func(t *testing.T, res *http.Response, body []byte) {
				var ms int
				if _, err := fmt.Sscanf(strings.TrimPrefix(string(body), id), " deadline %dms", &ms); err != nil || ms < 29000 || ms > 30000 {
					t.Errorf("%q: the plugin's deadline is not the kernel's 30s", body)
				}
			},
		},
		{
			name: "stream", method: "GET", path: "/stream?n=3&ms=1",
			check: func(t *testing.T, res *http.Response, body []byte) {
				want := fmt.Sprintf("%s line 1\n%s line 2\n%s line 3\n", id, id, id)
				if string(body) != want {
					t.Errorf("%q", body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Errorf("ServeHTTP: %v", err)
			}
			tt.check(t, res, body)
		})
	}

	t.Run("unread request body", func(t *testing.T) {
		// The plugin answers without reading the body, while the client
		// has sent part of it and keeps the rest back: ServeHTTP must stop
		// reading the body and return.
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		chunk := strings.Repeat("x", 1000)
		_, err = fmt.Fprintf(conn, "PUT / HTTP/1.1\r\nHost: probe\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(chunk), chunk)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if body, _ := io.ReadAll(res.Body); string(body) != id+"\n" {
			t.Errorf("body %q", body)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeHTTP: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("ServeHTTP did not return while the client held back the rest of its body")
		}
	})
}

func TestChecksum(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, sum string
		want      error
	}{
		{"mismatch", strings.Repeat("00", 32), goplugin.ErrChecksumsDoNotMatch},
		{"malformed", "not hex", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, _ := testSpec(t, bins.hang)
			spec.SHA256 = tt.sum
			pidFile := filepath.Join(t.TempDir(), "pid")
			spec.Env = append(spec.Env, "PIDFILE="+pidFile)
			_, err := Start(context.Background(), spec)
			if err == nil {
				t.Fatal("Start succeeded with a wrong checksum")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), bins.hang) {
				t.Errorf("error %q does not name the executable", err)
			}
			if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
				t.Error("the executable ran despite its checksum")
			}
			emptyDir(t, spec.SocketDir)
		})
	}
}

func TestBrokenPrograms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path string
		wantErr    []string // substrings of Start's error
		wantLog    string   // a line of the program's stderr in the log
	}{
		{"exits at start", bins.exit1, []string{"exit status 1"}, "exit1: refusing to start"},
		{"hangs", bins.hang, []string{"timeout while waiting for plugin to start"}, ""},
		{"prints garbage", bins.garbage, []string{"Unrecognized remote plugin message", "hello, I am not a plugin"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, rec := testSpec(t, tt.path)
			spec.StartTimeout = 2 * time.Second
			pidFile := filepath.Join(t.TempDir(), "pid")
			spec.Env = append(spec.Env, "PIDFILE="+pidFile)
			began := time.Now()
			p, err := Start(context.Background(), spec)
			took := time.Since(began)
			if err == nil {
				p.Kill()
				t.Fatal("Start succeeded")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q, want it to say %q", err, s)
				}
			}
			if took > spec.StartTimeout+3*time.Second {
				t.Errorf("Start took %v with a StartTimeout of %v", took, spec.StartTimeout)
			}
			b, rerr := os.ReadFile(pidFile)
			if rerr != nil {
				t.Fatalf("the program did not run: %v", rerr)
			}
			pid, _ := strconv.Atoi(string(b))
			if alive(pid) {
				t.Errorf("process %d is still there", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			emptyDir(t, spec.SocketDir)
			if tt.wantLog != "" {
				if recs := rec.Find(tt.wantLog); len(recs) == 0 || recs[0].Attrs["stream"] != "stderr" {
					t.Errorf("stderr line %q not logged: %v", tt.wantLog, recs)
				}
			}
		})
	}
}

func TestStartCancel(t *testing.T) {
	t.Parallel()
	spec, _ := testSpec(t, bins.hang)
	pidFile := filepath.Join(t.TempDir(), "pid")
	spec.Env = append(spec.Env, "PIDFILE="+pidFile)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the program runs and has written its pid (the file
		// exists a moment before it holds the pid).
		for {
			if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	began := time.Now()
	_, err := Start(ctx, spec)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Start took %v to notice its context", took)
	}
	b, _ := os.ReadFile(pidFile)
	if pid, _ := strconv.Atoi(string(b)); pid == 0 || alive(pid) {
		t.Errorf("process %q is still there", b)
	}
	emptyDir(t, spec.SocketDir)

	t.Run("cancelled before", func(t *testing.T) {
		spec, _ := testSpec(t, bins.hang)
		pidFile := filepath.Join(t.TempDir(), "pid")
		spec.Env = append(spec.Env, "PIDFILE="+pidFile)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Start(ctx, spec); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start: %v, want context.Canceled", err)
		}
		if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
			t.Error("the program ran although the context was done")
		}
		emptyDir(t, spec.SocketDir)
	})
}

func TestDrainThenKill(t *testing.T) {
	t.Parallel()
	spec, _ := testSpec(t, bins.probe)
	p := startProbe(t, spec)
	pid := p.Pid()
	srv, done := serveProbe(t, p)
	res, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if err := p.ServeHTTP(ctx, httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "web"); !errors.Is(err, ErrNotSent) {
		t.Errorf("call after Drain: %v, want ErrNotSent", err)
	}
	began := time.Now()
	p.Kill()
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Kill took %v", took)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited is open after Kill")
	}
	if alive(pid) {
		t.Errorf("process %d is still there", pid)
	}
	emptyDir(t, spec.SocketDir)
	// Stopped by the kernel after a drain, the plugin ends cleanly.
	if err := p.ExitErr(); err != nil {
		t.Errorf("exit after Drain and Kill: %v, want status 0", err)
	}
	p.Kill() // again: a no-op
}

// TestStandalone runs a plugin without the kernel: with SWITCHYARD_STANDALONE
// set, the SDK serves its handler with net/http on that address.
func TestStandalone(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pprofAddr := pl.Addr().String()
	pl.Close()
	dnsAddr := freeUDPAndTCP(t)
	cmd := exec.Command(bins.probe)
	cmd.Env = []string{"SWITCHYARD_STANDALONE=" + addr, "SWITCHYARD_STANDALONE_DNS=" + dnsAddr,
		"SWITCHYARD_PPROF=" + pprofAddr, "GORACE=atexit_sleep_ms=0"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/")
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("standalone probe never answered: %v\n%s", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if want := fmt.Sprintf("probe test pid %d\n", cmd.Process.Pid); body != want {
		t.Errorf("standalone GET / = %q, want %q", body, want)
	}
	// SWITCHYARD_STANDALONE_DNS serves its DNS handler, on UDP and TCP.
	for _, network := range []string{"udp", "tcp"} {
		q := new(dns.Msg).SetQuestion("anything.example.", dns.TypeTXT)
		in, _, err := (&dns.Client{Net: network, Timeout: 5 * time.Second}).Exchange(q, dnsAddr)
		if err != nil {
			t.Errorf("standalone DNS over %s: %v", network, err)
			continue
		}
		if len(in.Answer) != 1 || !strings.Contains(in.Answer[0].String(), "probe test") {
			t.Errorf("standalone DNS over %s answered %v", network, in.Answer)
		}
	}
	// SWITCHYARD_PPROF serves the plugin's profiles.
	if res, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1"); err != nil {
		t.Errorf("plugin pprof: %v", err)
	} else {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(b), "goroutine profile:") {
			t.Errorf("plugin pprof goroutine profile: %.200q", b)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("standalone exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}

func TestCrash(t *testing.T) {
	t.Parallel()
	spec, rec := testSpec(t, bins.probe)
	p := startProbe(t, spec)
	pid := p.Pid()

	// Two calls in flight: one streaming (its head is out), one waiting.
	type result struct {
		err  error
		head bool
	}
	streaming := make(chan result, 1)
	firstWrite := make(chan struct{})
	go func() {
		w := &signalRecorder{ResponseRecorder: httptest.NewRecorder(), first: firstWrite}
		err := p.ServeHTTP(context.Background(), w, httptest.NewRequest("GET", "/stream?n=100000&ms=20", nil), "web")
		streaming <- result{err, w.wrote}
	}()
	<-firstWrite
	waiting := make(chan error, 1)
	go func() {
		waiting <- p.ServeHTTP(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/slow?ms=60000", nil), "web")
	}()
	testutil.WaitFor(t, 5*time.Second, "two calls in flight", func() bool { return p.pendingCalls() == 2 })

	err := p.ServeHTTP(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/crash", nil), "web")
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotSent) {
		t.Errorf("the crashing call: %v, want ErrUnavailable", err)
	}
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited did not close after the crash")
	}
	if err := p.ExitErr(); err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("ExitErr %v, want exit status 2", err)
	}
	if r := <-streaming; !errors.Is(r.err, ErrUnavailable) || !errors.Is(r.err, ErrAborted) || !r.head {
		t.Errorf("streaming call: %v (head sent: %v), want ErrAborted and ErrUnavailable", r.err, r.head)
	}
	if err := <-waiting; !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAborted) {
		t.Errorf("waiting call: %v, want ErrUnavailable", err)
	}
	if err := p.ServeHTTP(context.Background(), httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "web"); !errors.Is(err, ErrNotSent) {
		t.Errorf("call after the crash: %v, want ErrNotSent", err)
	}
	testutil.WaitFor(t, 5*time.Second, "the crash line in the log", func() bool {
		return len(rec.Find(fmt.Sprintf("probe test pid %d: crashing on request", pid))) > 0
	})
	began := time.Now()
	p.Kill()
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Kill of a dead process took %v", took)
	}
	emptyDir(t, spec.SocketDir)
}

// signalRecorder closes first at the first body write.
type signalRecorder struct {
	*httptest.ResponseRecorder
	first chan struct{}
	wrote bool
}

func (w *signalRecorder) Write(b []byte) (int, error) {
	if !w.wrote {
		w.wrote = true
		close(w.first)
	}
	return w.ResponseRecorder.Write(b)
}

// pendingCalls counts the calls in flight on p's streams.
func (c *Client) pendingCalls() int {
	c.mu.Lock()
	streams := c.streams
	c.mu.Unlock()
	n := 0
	for _, s := range streams {
		s.mu.Lock()
		n += len(s.calls)
		s.mu.Unlock()
	}
	return n
}

func TestLogs(t *testing.T) {
	t.Parallel()
	spec, rec := testSpec(t, bins.probe)
	p := startProbe(t, spec)
	ctx := context.Background()
	w := httptest.NewRecorder()
	if err := p.ServeHTTP(ctx, w, httptest.NewRequest("GET", "/log?msg=hello-from-probe", nil), "web"); err != nil || w.Code != 200 {
		t.Fatalf("/log: %v %d %q", err, w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	if err := p.ServeHTTP(ctx, w, httptest.NewRequest("GET", "/panic", nil), "web"); err != nil || w.Code != 500 {
		t.Fatalf("/panic: %v %d %q", err, w.Code, w.Body)
	}
	id := fmt.Sprintf("probe test pid %d", p.Pid())
	tests := []struct {
		name, msg string
		level     slog.Level
		attrs     map[string]string
	}{
		{"Host.Log record", "hello-from-probe", slog.LevelInfo, map[string]string{"probe": id}},
		{"stderr line", "hello-from-probe", slog.LevelInfo, map[string]string{"stream": "stderr"}},
		{"handler panic", "handler panicked", slog.LevelError, map[string]string{"panic": "probe: panic on request", "handler": "http GET /panic"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.WaitFor(t, 5*time.Second, "the record", func() bool {
				for _, r := range rec.Find(tt.msg) {
					if r.Level != tt.level {
						continue
					}
					match := true
					for k, v := range tt.attrs {
						if r.Attrs[k] != v {
							match = false
						}
					}
					if match {
						return true
					}
				}
				return false
			})
		})
	}
}

// TestKillUnresponsive checks that Kill ends a plugin that cannot answer
// go-plugin's shutdown request.
func TestKillUnresponsive(t *testing.T) {
	t.Parallel()
	spec, _ := testSpec(t, bins.probe)
	p := startProbe(t, spec)
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	killed := make(chan struct{})
	go func() {
		p.Kill()
		close(killed)
	}()
	select {
	case <-killed:
	case <-time.After(killGrace + 5*time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-killed
		t.Fatal("Kill hung on a stopped plugin")
	}
	t.Logf("Kill of a stopped plugin took %v", time.Since(began).Round(time.Millisecond))
	if alive(pid) {
		t.Errorf("process %d is still there", pid)
	}
	emptyDir(t, spec.SocketDir)
}

// TestStartThreadExit checks that a plugin survives the end of the OS
// thread that asked for it: Pdeathsig follows the thread that forks, so the
// runner forks from a thread of its own.
func TestStartThreadExit(t *testing.T) {
	t.Parallel()
	spec, _ := testSpec(t, bins.probe)
	type started struct {
		p   *Process
		err error
	}
	ch := make(chan started, 1)
	go func() {
		// Locked and never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		p, err := Start(context.Background(), spec)
		ch <- started{p, err}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer s.p.Kill()
	time.Sleep(300 * time.Millisecond)
	if !alive(s.p.Pid()) {
		t.Fatal("the plugin died with the thread that started it")
	}
	select {
	case <-s.p.Exited():
		t.Fatalf("the plugin exited: %v", s.p.ExitErr())
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.p.Describe(ctx); err != nil {
		t.Errorf("Describe: %v", err)
	}
}

// TestPdeathsig kills a kernel (a helper process) with SIGKILL and checks
// that its plugin dies with it. The test process makes itself a child
// subreaper, so the orphaned plugin becomes its child and can be reaped and
// examined here instead of lingering as a zombie under init.
func TestPdeathsig(t *testing.T) {
	if err := setChildSubreaper(true); err != nil {
		t.Skipf("cannot become a child subreaper: %v", err)
	}
	defer func() { _ = setChildSubreaper(false) }()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=pdeathsig", "PROBE="+bins.probe, "SOCKET_DIR="+testutil.ShortDir(t))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	var pid int
	select {
	case s := <-line:
		if pid, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper said %q", s)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the helper did not start its plugin")
	}
	if !alive(pid) {
		t.Fatalf("plugin %d is not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	deadline := time.Now().Add(2 * time.Second)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid {
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("plugin ended with %v, want SIGKILL", ws)
			}
			return
		}
		if err != nil && !errors.Is(err, syscall.ECHILD) && !errors.Is(err, syscall.EINTR) {
			t.Fatalf("wait4: %v", err)
		}
		if errors.Is(err, syscall.ECHILD) && !alive(pid) {
			return // reaped by someone else: gone all the same
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d outlived its kernel by 2s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setChildSubreaper sets or clears PR_SET_CHILD_SUBREAPER for this process.
func setChildSubreaper(on bool) error {
	const prSetChildSubreaper = 36
	v := uintptr(0)
	if on {
		v = 1
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, v, 0); errno != 0 {
		return errno
	}
	return nil
}

// pdeathsigHelper is the kernel of TestPdeathsig: it starts probe, prints
// its pid and waits to be killed.
func pdeathsigHelper() {
	spec := Spec{
		Path:         os.Getenv("PROBE"),
		SocketDir:    os.Getenv("SOCKET_DIR"),
		StartTimeout: 30 * time.Second,
		Logger:       slog.New(slog.DiscardHandler),
	}
	p, err := Start(context.Background(), spec)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(p.Pid())
	time.Sleep(time.Hour)
}

// freeUDPAndTCP returns a loopback address whose port is free for both UDP
// and TCP just now, as a DNS server needs.
func freeUDPAndTCP(t *testing.T) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}
