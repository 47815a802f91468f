package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// scripts are the test scripts, each run by /bin/sh. $PIDDIR is a
// directory where a script records process ids for the test to check.
var scripts = map[string]string{
	"redirect":  `printf 'Status: 302 Found\r\nLocation: http://example.test/x\r\n\r\n'`,
	"location":  `echo "Location: http://example.test/y"; echo`,
	"document":  `printf 'Content-Type: text/plain\r\nX-Script: document\r\n\r\nhello, cgi\n'`,
	"html":      `printf 'X-Script: html\n\n<p>no type</p>\n'`,
	"missing":   `printf 'Status: 404 Not Found\nContent-Type: text/plain\n\nno such thing\n'`,
	"badstatus": `printf 'Status: OK\nContent-Type: text/plain\n\nmust not be seen\n'`,
	"nohead":    `echo "no header line here"`,
	"silent":    `exit 0`,
	"failing":   `printf 'Content-Type: text/plain\n\npartial\n'; exit 3`,
	"big":       `printf 'Content-Type: application/octet-stream\n\n'; dd if=/dev/zero bs=1024 count=300 2>/dev/null`,
	"echo": `printf 'Content-Type: text/plain\n\n'
echo "$REQUEST_METHOD $QUERY_STRING $PATH_INFO $HTTP_X_TEST $CONTENT_LENGTH"`,
	"env":   `printf 'Content-Type: text/plain\n\n'; env`,
	"cat":   `printf 'Content-Type: application/octet-stream\n\n'; cat`,
	"noisy": `echo "something went wrong" >&2; printf 'half a line' >&2; printf 'Content-Type: text/plain\n\nok\n'`,
	"sleepy": `echo $$ > "$PIDDIR/sleepy"
sleep 30 &
echo $! > "$PIDDIR/sleepy-child"
wait`,
	"slowbody": `printf 'Content-Type: text/plain\n\npartial\n'; sleep 30`,
	"holder": `sleep 30 &
echo $! > "$PIDDIR/holder"
printf 'Content-Type: text/plain\n\nhi\n'`,
	"waiter":  `echo $$ > "$PIDDIR/waiter"; exec sleep 30`,
	".hidden": `printf 'Content-Type: text/plain\n\nhidden\n'`,
}

type testGateway struct {
	*sdktest.Plugin
	dir    string // the scripts, symlinks resolved
	pids   string // $PIDDIR
	log    *testutil.LogRecorder
	client *http.Client // does not follow redirects
}

// newTestGateway writes the scripts into a directory and serves it with
// settings added to dir and PIDDIR.
func newTestGateway(t *testing.T, settings map[string]any) *testGateway {
	t.Helper()
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pids := t.TempDir()
	if settings == nil {
		settings = map[string]any{}
	}
	settings["dir"] = dir
	env, _ := settings["env"].([]string)
	settings["env"] = append(env, "PIDDIR="+pids)
	log := &testutil.LogRecorder{}
	p, err := sdktest.Start(t, newPlugin("v1"), settings, sdktest.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testGateway{
		Plugin: p, dir: real, pids: pids, log: log,
		client: &http.Client{Transport: p, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

func (g *testGateway) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

func newRequest(t *testing.T, method, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://cgi.test"+target, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// pid reads a pid a script recorded in $PIDDIR.
func (g *testGateway) pid(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.pids, name))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestDescribe(t *testing.T) {
	g := newTestGateway(t, nil)
	if d := g.Describe; d.GetName() != "cgi" || d.GetVersion() != "v1" || !slices.Equal(d.GetProtocols(), []string{"http"}) {
		t.Errorf("Describe = %v", d)
	}
}

func TestOutput(t *testing.T) {
	g := newTestGateway(t, nil)
	tests := []struct {
		name, path string
		code       int
		header     map[string]string
		body       string
	}{
		{"status and location", "/redirect", 302, map[string]string{"Location": "http://example.test/x"}, ""},
		{"location alone is 302", "/location", 302, map[string]string{"Location": "http://example.test/y"}, ""},
		{"document", "/document", 200, map[string]string{"Content-Type": "text/plain", "X-Script": "document"}, "hello, cgi\n"},
		{"no Content-Type is text/html", "/html", 200, map[string]string{"Content-Type": "text/html", "X-Script": "html"}, "<p>no type</p>\n"},
		{"status with a body", "/missing", 404, map[string]string{"Content-Type": "text/plain"}, "no such thing\n"},
		{"malformed status is 502", "/badstatus", 502, nil, ""},
		{"no header block is 502", "/nohead", 502, nil, ""},
		{"no output is 502", "/silent", 502, nil, ""},
		{"failed script keeps its answer", "/failing", 200, map[string]string{"Content-Type": "text/plain"}, "partial\n"},
		{"path info", "/document/extra/path", 200, nil, "hello, cgi\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := g.do(t, newRequest(t, "GET", tt.path, nil))
			if res.StatusCode != tt.code {
				t.Errorf("status %d, want %d (body %q)", res.StatusCode, tt.code, body)
			}
			for k, v := range tt.header {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tt.code == 502 {
				if strings.Contains(body, "must not be seen") || strings.Contains(body, "no header line") {
					t.Errorf("502 passes on the script's output: %q", body)
				}
				return
			}
			if body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
		})
	}
}

func TestBigOutput(t *testing.T) {
	g := newTestGateway(t, nil)
	res, body := g.do(t, newRequest(t, "GET", "/big", nil))
	if res.StatusCode != 200 || body != strings.Repeat("\x00", 300<<10) {
		t.Errorf("%d, %d bytes, want 200 and %d zero bytes", res.StatusCode, len(body), 300<<10)
	}
}

func TestEnv(t *testing.T) {
	g := newTestGateway(t, map[string]any{"env": []string{"EXTRA=yes", "SERVER_SOFTWARE=custom/1"}})
	req := newRequest(t, "POST", "/env/a/b?x=1&y=%2F", strings.NewReader("abc"))
	req.Host = "cgi.test:8080"
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("X-Test", "hello")
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	req.Header.Add("Accept", "text/html")
	req.Header.Add("Accept", "text/plain")
	req.Header.Set("Proxy", "http://evil.test/")
	req.Header["X_Smuggled"] = []string{"bad"}
	res, body := g.do(t, req)
	if res.StatusCode != 200 {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	env := parseEnv(body)
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	want := map[string]string{
		"SERVER_SOFTWARE":   "custom/1", // the env setting wins
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_NAME":       "cgi.test",
		"SERVER_PORT":       "8080",
		"HTTP_HOST":         "cgi.test:8080",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"REQUEST_METHOD":    "POST",
		"QUERY_STRING":      "x=1&y=%2F",
		"REQUEST_URI":       "/env/a/b?x=1&y=%2F",
		"PATH_INFO":         "/a/b",
		"SCRIPT_NAME":       "/env",
		"SCRIPT_FILENAME":   filepath.Join(g.dir, "env"),
		"REMOTE_ADDR":       "192.0.2.1",
		"REMOTE_HOST":       "192.0.2.1",
		"REMOTE_PORT":       "1234",
		"CONTENT_LENGTH":    "3",
		"CONTENT_TYPE":      "text/plain",
		"HTTP_CONTENT_TYPE": "text/plain",
		"HTTP_X_TEST":       "hello",
		"HTTP_COOKIE":       "a=1; b=2",
		"HTTP_ACCEPT":       "text/html, text/plain",
		"PATH":              path,
		"EXTRA":             "yes",
		"PIDDIR":            g.pids,
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("%s=%q (set %v), want %q", k, got, ok, v)
		}
	}
	for _, k := range []string{"HTTPS", "HTTP_PROXY", "HTTP_X_SMUGGLED"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%q is set", k, v)
		}
	}

	t.Run("TLS", func(t *testing.T) {
		req := newRequest(t, "GET", "/env", nil)
		req.TLS = &tls.ConnectionState{HandshakeComplete: true}
		res, err := g.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		env := parseEnv(string(b))
		if env["HTTPS"] != "on" || env["SERVER_PORT"] != "443" || env["PATH_INFO"] != "" || env["QUERY_STRING"] != "" {
			t.Errorf("HTTPS=%q SERVER_PORT=%q PATH_INFO=%q QUERY_STRING=%q", env["HTTPS"], env["SERVER_PORT"], env["PATH_INFO"], env["QUERY_STRING"])
		}
		if _, ok := env["CONTENT_LENGTH"]; ok {
			t.Error("CONTENT_LENGTH set for a request without a body")
		}
	})
}

// parseEnv reads the output of env(1).
func parseEnv(s string) map[string]string {
	m := make(map[string]string)
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "="); ok {
			m[k] = v
		}
	}
	return m
}

func TestStdin(t *testing.T) {
	g := newTestGateway(t, nil)
	t.Run("echo", func(t *testing.T) {
		req := newRequest(t, "POST", "/echo/some/path?a=b", strings.NewReader("twelve bytes"))
		req.Header.Set("X-Test", "xt")
		res, body := g.do(t, req)
		if want := "POST a=b /some/path xt 12\n"; res.StatusCode != 200 || body != want {
			t.Errorf("%d %q, want %q", res.StatusCode, body, want)
		}
	})
	for _, n := range []int{1, 100 << 10} {
		t.Run("cat "+strconv.Itoa(n), func(t *testing.T) {
			in := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
			res, body := g.do(t, newRequest(t, "POST", "/cat", bytes.NewReader(in)))
			if res.StatusCode != 200 || body != string(in) {
				t.Errorf("%d, %d bytes back, want 200 and the %d sent", res.StatusCode, len(body), n)
			}
		})
	}
	t.Run("no body", func(t *testing.T) {
		res, body := g.do(t, newRequest(t, "GET", "/cat", nil))
		if res.StatusCode != 200 || body != "" {
			t.Errorf("%d %q", res.StatusCode, body)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		res, _ := g.do(t, newRequest(t, "POST", "/cat", io.MultiReader(strings.NewReader("x"))))
		if res.StatusCode != http.StatusLengthRequired {
			t.Errorf("%d, want 411", res.StatusCode)
		}
	})
}

func TestStderr(t *testing.T) {
	g := newTestGateway(t, nil)
	res, body := g.do(t, newRequest(t, "GET", "/noisy", nil))
	if res.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	var lines []string
	for _, r := range g.log.Find("cgi: stderr") {
		if r.Attrs["script"] != "noisy" {
			t.Errorf("record without script=noisy: %+v", r)
		}
		lines = append(lines, r.Attrs["line"])
	}
	if want := []string{"something went wrong", "half a line"}; !slices.Equal(lines, want) {
		t.Errorf("logged %q, want %q", lines, want)
	}
}

func TestTimeout(t *testing.T) {
	g := newTestGateway(t, map[string]any{"timeout": "500ms"})
	res, body := g.do(t, newRequest(t, "GET", "/sleepy", nil))
	if res.StatusCode != http.StatusGatewayTimeout || body != "cgi: sleepy timed out\n" {
		t.Errorf("%d %q, want 504", res.StatusCode, body)
	}
	// The script and what it started are killed with its process group.
	for _, name := range []string{"sleepy", "sleepy-child"} {
		if _, err := os.Stat(filepath.Join(g.pids, name)); err != nil {
			t.Logf("the script was killed before it wrote %s", name)
			continue
		}
		pid := g.pid(t, name)
		testutil.WaitFor(t, 10*time.Second, name+" to be killed", func() bool { return !testutil.Alive(pid) })
	}
	if len(g.log.Find("cgi: script timed out")) != 1 {
		t.Errorf("timeout not logged: %+v", g.log.Find(""))
	}
}

func TestTimeoutAfterOutput(t *testing.T) {
	g := newTestGateway(t, map[string]any{"timeout": "500ms"})
	res, err := g.client.Do(newRequest(t, "GET", "/slowbody", nil))
	if err != nil {
		t.Logf("cut off before the head: %v", err)
		return
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	t.Logf("%d %q, %v", res.StatusCode, b, err)
	if res.StatusCode == 200 && err == nil {
		t.Errorf("a script that timed out after printing %q ended cleanly", b)
	}
}

// TestOutputHeldOpen: a script that exits while a process it started holds
// its output open is answered, without waiting for that process.
func TestOutputHeldOpen(t *testing.T) {
	g := newTestGateway(t, nil)
	res, body := g.do(t, newRequest(t, "GET", "/holder", nil))
	pid := g.pid(t, "holder")
	defer syscall.Kill(pid, syscall.SIGKILL)
	if res.StatusCode != 200 || body != "hi\n" {
		t.Errorf("%d %q", res.StatusCode, body)
	}
}

func TestCallerGoesAway(t *testing.T) {
	g := newTestGateway(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		res, err := g.client.Do(newRequest(t, "GET", "/waiter", nil).WithContext(ctx))
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	file := filepath.Join(g.pids, "waiter")
	testutil.WaitFor(t, 10*time.Second, "the script to start", func() bool {
		b, err := os.ReadFile(file)
		return err == nil && bytes.HasSuffix(b, []byte("\n"))
	})
	pid := g.pid(t, "waiter")
	cancel()
	if err := <-errc; err == nil {
		t.Error("the request succeeded")
	}
	testutil.WaitFor(t, 10*time.Second, "the script to be killed", func() bool { return !testutil.Alive(pid) })
}

func TestNotFound(t *testing.T) {
	g := newTestGateway(t, nil)
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(g.dir, "subdir"), 0o755))
	must(os.WriteFile(filepath.Join(g.dir, "subdir", "inner"), []byte("#!/bin/sh\necho\n"), 0o755))
	must(os.WriteFile(filepath.Join(g.dir, "plain"), []byte("#!/bin/sh\necho\n"), 0o644))
	must(os.WriteFile(filepath.Join(outside, "escape"), []byte("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nescaped\\n'\n"), 0o755))
	must(os.Symlink(filepath.Join(outside, "escape"), filepath.Join(g.dir, "link-out")))
	must(os.Symlink("/bin/sh", filepath.Join(g.dir, "link-sh")))
	must(os.Symlink("nowhere", filepath.Join(g.dir, "link-dangling")))
	must(os.Symlink("subdir", filepath.Join(g.dir, "link-dir")))
	must(os.Symlink("document", filepath.Join(g.dir, "link-in")))

	for _, path := range []string{
		"/",
		"/nonexistent",
		"/nonexistent/extra",
		"/subdir",
		"/subdir/inner",
		"/plain",
		"/..",
		"/../" + filepath.Base(outside) + "/escape",
		"/%2e%2e/x",
		"/./document",
		"/.hidden",
		"//document",
		"/link-out",
		"/link-sh",
		"/link-dangling",
		"/link-dir",
		"/link-dir/inner",
		"/document%00",
	} {
		t.Run(path, func(t *testing.T) {
			res, body := g.do(t, newRequest(t, "GET", path, nil))
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("%d %q, want 404", res.StatusCode, body)
			}
		})
	}
	t.Run("a symlink inside the directory", func(t *testing.T) {
		res, body := g.do(t, newRequest(t, "GET", "/link-in", nil))
		if res.StatusCode != 200 || body != "hello, cgi\n" {
			t.Errorf("%d %q", res.StatusCode, body)
		}
	})
}

func TestStartFails(t *testing.T) {
	g := newTestGateway(t, nil)
	if err := os.WriteFile(filepath.Join(g.dir, "badinterp"), []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "garbage"), []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"badinterp", "garbage"} {
		t.Run(name, func(t *testing.T) {
			res, body := g.do(t, newRequest(t, "GET", "/"+name, nil))
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("%d %q, want 502", res.StatusCode, body)
			}
		})
	}
	if n := len(g.log.Find("cgi: cannot start script")); n != 2 {
		t.Errorf("%d start failures logged, want 2", n)
	}
}

func TestBadSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, settings := range map[string]map[string]any{
		"no dir":            {},
		"empty dir":         {"dir": ""},
		"missing dir":       {"dir": filepath.Join(dir, "missing")},
		"dir is a file":     {"dir": file},
		"unknown key":       {"dir": dir, "directory": dir},
		"bad timeout":       {"dir": dir, "timeout": "soon"},
		"zero timeout":      {"dir": dir, "timeout": "0s"},
		"negative timeout":  {"dir": dir, "timeout": "-1s"},
		"timeout as number": {"dir": dir, "timeout": 30},
		"env without =":     {"dir": dir, "env": []string{"NAME"}},
		"env without name":  {"dir": dir, "env": []string{"=value"}},
		"env not a list":    {"dir": dir, "env": "A=B"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := sdktest.Start(t, newPlugin("v1"), settings, sdktest.Options{}); err == nil {
				t.Fatal("Configure accepted bad settings")
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		if _, err := sdktest.Start(t, newPlugin("v1"), map[string]any{"dir": dir, "timeout": "1m", "env": []string{"A=B=C", "EMPTY="}}, sdktest.Options{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSplitPath(t *testing.T) {
	tests := []struct {
		path, name, pathInfo string
		ok                   bool
	}{
		{"/s", "s", "", true},
		{"/s/", "s", "/", true},
		{"/s/a/b", "s", "/a/b", true},
		{"/s/../x", "s", "/../x", true},
		{"", "", "", false},
		{"/", "", "", false},
		{"s", "", "", false},
		{"//s", "", "", false},
		{"/.", "", "", false},
		{"/..", "", "", false},
		{"/.../x", "", "", false},
		{"/.s", "", "", false},
		{"/s\x00", "", "", false},
	}
	for _, tt := range tests {
		name, pathInfo, ok := splitPath(tt.path)
		if name != tt.name || pathInfo != tt.pathInfo || ok != tt.ok {
			t.Errorf("splitPath(%q) = %q, %q, %v, want %q, %q, %v", tt.path, name, pathInfo, ok, tt.name, tt.pathInfo, tt.ok)
		}
	}
}

func TestRemoveLeadingDuplicates(t *testing.T) {
	got := removeLeadingDuplicates([]string{"A=1", "B=2", "A=3", "C=", "B=4=5"})
	if want := []string{"A=3", "C=", "B=4=5"}; !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}
