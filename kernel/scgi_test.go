package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/nginx"
	"github.com/switchyard-dev/switchyard/internal/testutil"
)

func inboxBin(t testing.TB, version string) string {
	return bins.Build(t, "inbox-"+version, "./plugins/inbox", version)
}

func cgiBin(t testing.TB) string {
	return bins.Build(t, "cgi", "./plugins/cgi", "")
}

// requireNginx returns nginx's path; without it the test fails under CI
// (which installs it) and is skipped elsewhere.
func requireNginx(t testing.TB) {
	t.Helper()
	if _, err := nginx.Path(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: CI must install it", err)
		}
		t.Skip(err)
	}
}

// scgiSetup is a kernel serving inbox, probe and cgi on SCGI UNIX sockets,
// and a real nginx in front of each.
type scgiSetup struct {
	tk    *testKernel
	nginx *nginx.Process
	urls  map[string]string // listener → http://127.0.0.1:PORT of its nginx server
}

func startSCGI(t *testing.T, plugins map[string]string) *scgiSetup {
	t.Helper()
	requireNginx(t)
	sockDir := testutil.ShortDir(t)
	scripts := t.TempDir()
	writeScript(t, filepath.Join(scripts, "redirect"), "#!/bin/sh\nprintf 'Status: 302 Found\\r\\nLocation: http://example.test/from-cgi\\r\\n\\r\\n'\n")
	writeScript(t, filepath.Join(scripts, "hello"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello %s %s\\n' \"$REQUEST_METHOD\" \"$PATH_INFO\"\n")
	cfg := fmt.Sprintf(`
[plugins.inbox]
path = "plugins/inbox"
drain_timeout = "20s"
call_timeout = "20s"

[plugins.probe]
path = "plugins/probe"

[plugins.cgi]
path = "plugins/cgi"
[plugins.cgi.settings]
dir = %q
timeout = "10s"

[[listeners]]
name = "inbox"
protocol = "scgi"
address = "unix:%s/inbox.sock"
plugin = "inbox"
timeout = "30s"

[[listeners]]
name = "probe"
protocol = "scgi"
address = "unix:%s/probe.sock"
plugin = "probe"

[[listeners]]
name = "cgi"
protocol = "scgi"
address = "unix:%s/cgi.sock"
plugin = "cgi"
`, scripts, sockDir, sockDir, sockDir)
	tk := startKernel(t, cfg, plugins)
	s := &scgiSetup{tk: tk, urls: map[string]string{}}
	var routes []nginx.Route
	for _, name := range []string{"inbox", "probe", "cgi"} {
		addr, err := nginx.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, nginx.Route{Listen: addr, SCGI: "unix:" + filepath.Join(sockDir, name+".sock")})
		s.urls[name] = "http://" + addr
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := nginx.Start(ctx, nginx.Config{Dir: t.TempDir(), Routes: routes})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s.nginx = p
	t.Cleanup(func() {
		p.Stop()
		cancel()
		if t.Failed() {
			t.Logf("nginx error log:\n%s", p.ErrorLog())
		}
	})
	return s
}

// diagnose says whether nginx and the kernel's inbox socket answer, and
// what nginx's process is doing.
func (s *scgiSetup) diagnose() string {
	var b strings.Builder
	c := &http.Client{Timeout: 3 * time.Second}
	if code, body, err := get(c, s.urls["probe"]+"/"); err != nil {
		fmt.Fprintf(&b, "nginx→probe: %v; ", err)
	} else {
		fmt.Fprintf(&b, "nginx→probe: %d %q; ", code, body)
	}
	for _, l := range s.tk.k.Listeners() {
		if l.Name != "inbox" {
			continue
		}
		fmt.Fprintf(&b, "inbox listener %+v; ", l)
		conn, err := net.DialTimeout("unix", strings.TrimPrefix(l.Address, "unix:"), 3*time.Second)
		if err != nil {
			fmt.Fprintf(&b, "direct SCGI: %v; ", err)
			continue
		}
		hdr := "CONTENT_LENGTH\x002\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/message\x00"
		fmt.Fprintf(conn, "%d:%s,hi", len(hdr), hdr)
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		answer, err := io.ReadAll(conn)
		conn.Close()
		fmt.Fprintf(&b, "direct SCGI: %q %v; ", answer, err)
	}
	if pid := s.nginx.Pid(); pid > 0 {
		for _, f := range []string{"wchan", "stat"} {
			data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			fmt.Fprintf(&b, "nginx %s: %s; ", f, data)
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		fmt.Fprintf(&b, "nginx fds: %d; ", len(fds))
	}
	fmt.Fprintf(&b, "nginx error log: %s", s.nginx.ErrorLog())
	return b.String()
}

func writeScript(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func do(t *testing.T, c *http.Client, method, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return res, b
}

// TestSCGIThroughNginx sends requests through a real nginx's scgi_pass to
// the inbox, probe and cgi plugins.
func TestSCGIThroughNginx(t *testing.T) {
	s := startSCGI(t, map[string]string{"inbox": inboxBin(t, "v1"), "probe": probeBin(t, "v1"), "cgi": cgiBin(t)})
	inbox, probe, cgi := s.urls["inbox"], s.urls["probe"], s.urls["cgi"]

	t.Run("inbox round trip", func(t *testing.T) {
		res, b := do(t, noRedirects, "POST", inbox+"/message", []byte("hello, inbox"))
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("POST /message: %d %q", res.StatusCode, b)
		}
		id := strings.TrimSpace(string(b))
		if loc := res.Header.Get("Location"); loc != "/message/"+id {
			t.Errorf("Location %q, want /message/%s", loc, id)
		}
		res, b = do(t, noRedirects, "GET", inbox+"/message/"+id, nil)
		if res.StatusCode != 200 || string(b) != "hello, inbox" {
			t.Errorf("GET /message/%s: %d %q", id, res.StatusCode, b)
		}
		res, b = do(t, noRedirects, "GET", inbox+"/messages", nil)
		var list []struct {
			ID   string `json:"id"`
			Size int    `json:"size"`
		}
		if err := json.Unmarshal(b, &list); err != nil || res.StatusCode != 200 {
			t.Fatalf("GET /messages: %d %q %v", res.StatusCode, b, err)
		}
		found := false
		for _, m := range list {
			found = found || (m.ID == id && m.Size == len("hello, inbox"))
		}
		if !found {
			t.Errorf("GET /messages lacks %s: %s", id, b)
		}
		// What the inbox stored is in the kernel's store, as ctl shows it.
		r := s.tk.ctl("state get inbox/messages/" + id)
		if !r.OK || !strings.Contains(string(r.Data), `"value":"hello, inbox"`) {
			t.Errorf("ctl state get: %+v %s", r, r.Data)
		}
		r = s.tk.ctl("state list inbox/messages/")
		if !r.OK || !strings.Contains(string(r.Data), id) {
			t.Errorf("ctl state list: %+v %s", r, r.Data)
		}
	})

	t.Run("1 MiB body", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
		res, b := do(t, noRedirects, "POST", inbox+"/message", big)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("POST 1 MiB: %d %q", res.StatusCode, b)
		}
		id := strings.TrimSpace(string(b))
		if v, err := s.tk.k.store.Get(context.Background(), "inbox/messages/"+id); err != nil || !bytes.Equal(v, big) {
			t.Errorf("the stored 1 MiB message: %d bytes, %v", len(v), err)
		}
		res, b = do(t, noRedirects, "GET", inbox+"/message/"+id, nil)
		if res.StatusCode != 200 || sha256.Sum256(b) != sha256.Sum256(big) {
			t.Logf("head %v", res.Header)
			t.Errorf("GET the 1 MiB message: %d, %d bytes", res.StatusCode, len(b))
		}
	})

	t.Run("actions outside the allowlist", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{"DELETE", "/message/x"}, {"GET", "/"}, {"PUT", "/message"}, {"GET", "/admin"},
		} {
			res, b := do(t, noRedirects, c.method, inbox+c.path, nil)
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s: %d %q, want 404", c.method, c.path, res.StatusCode, b)
			}
		}
	})

	t.Run("302 from probe", func(t *testing.T) {
		res, _ := do(t, noRedirects, "GET", probe+"/status/302?location=http://example.test/x", nil)
		if res.StatusCode != 302 || res.Header.Get("Location") != "http://example.test/x" {
			t.Errorf("/status/302: %d Location %q", res.StatusCode, res.Header.Get("Location"))
		}
		res, _ = do(t, noRedirects, "GET", probe+"/redirect?to=http://example.test/y", nil)
		if res.StatusCode != 302 || res.Header.Get("Location") != "http://example.test/y" {
			t.Errorf("/redirect: %d Location %q", res.StatusCode, res.Header.Get("Location"))
		}
	})

	t.Run("malformed CGI status is 502", func(t *testing.T) {
		res, b := do(t, noRedirects, "GET", probe+"/badcgi", nil)
		if res.StatusCode != 502 || bytes.Contains(b, []byte("must not be seen")) {
			t.Errorf("/badcgi: %d %q", res.StatusCode, b)
		}
	})

	t.Run("request as the plugin sees it", func(t *testing.T) {
		req, _ := http.NewRequest("POST", probe+"/echo?a=1&b=two", strings.NewReader("body!"))
		req.Header.Set("X-Test", "yes")
		req.Header.Set("Content-Type", "text/plain")
		res, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var e struct {
			Method     string              `json:"method"`
			URI        string              `json:"uri"`
			Body       string              `json:"body"`
			RemoteAddr string              `json:"remote_addr"`
			Headers    map[string][]string `json:"headers"`
			Listener   string              `json:"listener"`
		}
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("%d %q: %v", res.StatusCode, b, err)
		}
		if e.Method != "POST" || e.URI != "/echo?a=1&b=two" || e.Body != "body!" ||
			!strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") || e.Listener != "probe" ||
			strings.Join(e.Headers["X-Test"], ",") != "yes" || strings.Join(e.Headers["Content-Type"], ",") != "text/plain" {
			t.Errorf("echo: %s", b)
		}
	})

	t.Run("302 from a CGI script", func(t *testing.T) {
		res, _ := do(t, noRedirects, "GET", cgi+"/redirect", nil)
		if res.StatusCode != 302 || res.Header.Get("Location") != "http://example.test/from-cgi" {
			t.Errorf("/redirect: %d Location %q", res.StatusCode, res.Header.Get("Location"))
		}
		res, b := do(t, noRedirects, "GET", cgi+"/hello/extra", nil)
		if res.StatusCode != 200 || string(b) != "hello GET /extra\n" {
			t.Errorf("/hello/extra: %d %q", res.StatusCode, b)
		}
	})

	st := s.tk.k.Listeners()
	for _, l := range st {
		if l.Requests == 0 {
			t.Errorf("listener %s counted no requests: %+v", l.Name, l)
		}
	}
}

// TestSCGISwapUnderLoad swaps the inbox plugin five times while eight
// clients POST through nginx: no request fails, and every message the inbox
// acknowledged is in the store afterwards.
func TestSCGISwapUnderLoad(t *testing.T) {
	vs := map[string]string{}
	for _, v := range []string{"v1", "v2", "v3"} {
		vs[v] = inboxBin(t, v)
	}
	s := startSCGI(t, map[string]string{"inbox": vs["v1"], "probe": probeBin(t, "v1"), "cgi": cgiBin(t)})
	url := s.urls["inbox"] + "/message"
	exe := filepath.Join(s.tk.dir, "plugins", "inbox")

	ctx, stop := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		acked    = map[string]string{} // id → body
		failures atomic.Int64
		errs     []string
	)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
			for n := 0; ctx.Err() == nil; n++ {
				body := fmt.Sprintf("client %d message %d %s", c, n, strings.Repeat("x", n%2000))
				res, err := client.Post(url, "text/plain", strings.NewReader(body))
				var b []byte
				if err == nil {
					b, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				if err != nil || res.StatusCode != http.StatusCreated {
					failures.Add(1)
					mu.Lock()
					if len(errs) < 10 {
						code := 0
						if res != nil {
							code = res.StatusCode
						}
						errs = append(errs, fmt.Sprintf("%d %q %v", code, b, err))
					}
					mu.Unlock()
					continue
				}
				mu.Lock()
				acked[strings.TrimSpace(string(b))] = body
				mu.Unlock()
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	var swapTimes []time.Duration
	for i := 1; i <= 5; i++ {
		before := s.tk.plugin("inbox")
		next := []string{"v1", "v2", "v3"}[i%3]
		t0 := time.Now()
		replace(t, vs[next], exe, i%2 == 0)
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("inbox generation %d", before.Generation+1), func() bool {
			return s.tk.plugin("inbox").Generation == before.Generation+1
		})
		swapTimes = append(swapTimes, time.Since(t0))
		if v := s.tk.plugin("inbox").Version; v != next {
			t.Errorf("swap %d: version %q, want %q", i, v, next)
		}
		n := count()
		deadline := time.Now().Add(20 * time.Second)
		for count() <= n+50 {
			if time.Now().After(deadline) {
				t.Logf("diagnosis: %s", s.diagnose())
				var dump strings.Builder
				pprof.Lookup("goroutine").WriteTo(&dump, 1)
				t.Fatalf("swap %d: %d messages in 20s after the swap; goroutines:\n%s", i, count()-n, dump.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop()
	wg.Wait()

	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests failed during 5 swaps; first: %v", n, errs)
	}
	// Every acknowledged message is in the store, byte for byte.
	missing := 0
	for id, body := range acked {
		v, err := s.tk.k.store.Get(context.Background(), "inbox/messages/"+id)
		if err != nil || string(v) != body {
			missing++
			if missing < 5 {
				t.Errorf("message %s: %q %v", id, clipString(string(v)), err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged messages missing or wrong", missing, len(acked))
	}
	t.Logf("%d messages acknowledged through nginx during 5 swaps, %d failed, %d missing; swap times %v",
		len(acked), failures.Load(), missing, swapTimes)
}

func clipString(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// TestSCGIShutdownInFlight stops the kernel while an SCGI request is in the
// plugin: the stop waits, and the reply arrives whole.
func TestSCGIShutdownInFlight(t *testing.T) {
	sockDir := testutil.ShortDir(t)
	tk := startKernel(t, strings.Replace(strings.Replace(probeConfig(""), `protocol = "http"`, `protocol = "scgi"`, 1),
		`address = "127.0.0.1:0"`, `address = "unix:`+sockDir+`/p.sock"`, 1), map[string]string{"probe": probeBin(t, "v1")})
	release := filepath.Join(t.TempDir(), "release")
	c, err := net.Dial("unix", sockDir+"/p.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := "CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00REQUEST_URI\x00/wait?file=" + release + "\x00"
	fmt.Fprintf(c, "%d:%s,", len(hdr), hdr)
	testutil.WaitFor(t, 10*time.Second, "the request to reach the plugin", func() bool {
		return tk.plugin("probe").Inflight > 0
	})
	stopped := make(chan struct{})
	go func() {
		tk.k.Shutdown()
		err := <-tk.done
		tk.done <- err
		close(stopped)
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("the kernel stopped with an SCGI request in flight")
	default:
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	answer, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(answer), "Status: 200 OK\r\n") || !strings.Contains(string(answer), "probe v1 pid") {
		t.Fatalf("reply across shutdown: %v %q", err, answer)
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the kernel did not stop after the reply")
	}
}

// TestCGIOutputOverHTTP: the CGI rules apply on an HTTP listener as on an
// SCGI one.
func TestCGIOutputOverHTTP(t *testing.T) {
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": probeBin(t, "v1")})
	base := tk.url("web")
	for _, c := range []struct {
		path, location string
		code           int
	}{
		{"/status/303?location=/other", "/other", 303},
		{"/redirect?to=http://example.test/z", "http://example.test/z", 302},
		{"/status/418", "", 418},
		{"/badcgi", "", 502},
	} {
		res, b := do(t, noRedirects, "GET", base+c.path, nil)
		if res.StatusCode != c.code || res.Header.Get("Location") != c.location {
			t.Errorf("%s: %d Location %q, want %d %q", c.path, res.StatusCode, res.Header.Get("Location"), c.code, c.location)
		}
		if c.code == 502 && bytes.Contains(b, []byte("must not be seen")) {
			t.Errorf("%s: the malformed output's body reached the client: %q", c.path, b)
		}
	}
}
