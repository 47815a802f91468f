package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/switchyard-dev/switchyard/internal/testutil"

	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// testProbe is a probe running in memory, with its exits, standard error
// and log recorded.
type testProbe struct {
	*sdktest.Plugin
	exits  chan int
	stderr *testutil.SyncBuffer
	stdio  *testutil.SyncBuffer
	log    *testutil.LogRecorder
	id     string
}

func newTestProbe(t *testing.T) *testProbe {
	tp := &testProbe{exits: make(chan int, 1), stderr: &testutil.SyncBuffer{}, stdio: &testutil.SyncBuffer{}, log: &testutil.LogRecorder{}}
	p := newProbe("v1", func(code int) { tp.exits <- code }, tp.stderr)
	p.stdio = tp.stdio
	pl, err := sdktest.Start(t, p.plugin(), nil, sdktest.Options{Listener: "web", Log: tp.log})
	if err != nil {
		t.Fatal(err)
	}
	tp.Plugin = pl
	tp.id = fmt.Sprintf("probe v1 pid %d", os.Getpid())
	return tp
}

func (tp *testProbe) do(t *testing.T, req *http.Request) (*http.Response, string, error) {
	t.Helper()
	c := tp.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

func get(t *testing.T, path string) *http.Request {
	req, err := http.NewRequest("GET", "http://probe.test"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestDescribe(t *testing.T) {
	tp := newTestProbe(t)
	if d := tp.Describe; d.GetName() != "probe" || d.GetVersion() != "v1" || !reflect.DeepEqual(d.GetProtocols(), []string{"http", "dns", "line", "timer"}) {
		t.Errorf("Describe = %v", d)
	}
}

func TestSimpleEndpoints(t *testing.T) {
	tp := newTestProbe(t)
	id := tp.id
	tests := []struct {
		name, path string
		code       int
		body       string // exact, or a prefix when it ends in "…"
	}{
		{"root", "/", 200, id + "\n"},
		{"not found", "/nope", 404, "404 page not found\n"},
		{"slow", "/slow?ms=10", 200, id + " slept 10ms\n"},
		{"slow without ms", "/slow", 400, "slow: ms must be a non-negative integer\n"},
		{"slow negative", "/slow?ms=-1", 400, "slow: ms must be a non-negative integer\n"},
		{"status", "/status/201", 201, id + " status 201\n"},
		{"status 599", "/status/599", 599, id + " status 599\n"},
		{"status 204 has no body", "/status/204", 204, ""},
		{"status below 200", "/status/199", 400, "status: CODE must be 200-999\n"},
		{"status above 999", "/status/1000", 400, "status: CODE must be 200-999\n"},
		{"status not a number", "/status/abc", 400, "status: CODE must be 200-999\n"},
		{"status with location", "/status/301?location=/moved", 301, id + " status 301\n"},
		{"redirect without status is 302", "/redirect?to=http://example.test/x", 302, ""},
		{"redirect without target", "/redirect", 400, "redirect: to is required\n"},
		{"malformed CGI status is 502", "/badcgi", 502, "host: plugin failed the call: cgi: malformed output: Status \"OK\" is not a three-digit code\n"},
		{"stream", "/stream?n=3&ms=0", 200, fmt.Sprintf("%[1]s line 1\n%[1]s line 2\n%[1]s line 3\n", id)},
		{"stream of nothing", "/stream", 200, ""},
		{"big bad", "/big?bytes=x", 400, "big: bytes must be a non-negative integer\n"},
		{"big zero", "/big?bytes=0", 200, ""},
		{"deadline none", "/deadline", 200, id + " deadline none\n"},
		{"wait without file", "/wait", 400, "wait: file is required\n"},
		{"log without msg", "/log", 400, "log: msg is required\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body, err := tp.do(t, get(t, tt.path))
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.code || body != tt.body {
				t.Errorf("%d %q, want %d %q", res.StatusCode, body, tt.code, tt.body)
			}
			if tt.code < 300 && tt.code != 204 && tt.body != "" && res.Header.Get("X-Probe") != id {
				t.Errorf("X-Probe %q", res.Header.Get("X-Probe"))
			}
		})
	}
}

func TestEcho(t *testing.T) {
	tp := newTestProbe(t)
	tests := []struct {
		name, method, target string
		body                 string
		chunked              bool
	}{
		{"get", "GET", "/echo", "", false},
		{"post", "POST", "/echo?a=1&b=%2F", "hello, probe", false},
		{"chunked", "PUT", "/echo", strings.Repeat("z", 100<<10), true},
		{"custom method", "PURGE", "/echo", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				r = io.MultiReader(r)
			}
			req, err := http.NewRequest(tt.method, "http://probe.test"+tt.target, r)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Add("X-Test", "one")
			req.Header.Add("X-Test", "two")
			res, body, err := tp.do(t, req)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("%v %v %s", err, res, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var e Echo
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(tt.body))
			wantCL := int64(len(tt.body))
			var wantTE []string
			if tt.chunked {
				wantCL, wantTE = -1, []string{"chunked"}
			}
			path, query, _ := strings.Cut(tt.target, "?")
			want := Echo{
				Probe: tp.id, Method: tt.method, URI: tt.target, Path: path, Query: query,
				Proto: "HTTP/1.1", Host: "probe.test", RemoteAddr: "192.0.2.1:1234",
				Headers:       map[string][]string{"X-Test": {"one", "two"}},
				ContentLength: wantCL, TransferEncoding: wantTE,
				Body: tt.body, BodyLen: len(tt.body), BodySHA256: hex.EncodeToString(sum[:]), Listener: "web",
			}
			if !reflect.DeepEqual(e, want) {
				t.Errorf("got  %+v\nwant %+v", e, want)
			}
		})
	}
}

func TestBig(t *testing.T) {
	tp := newTestProbe(t)
	for _, n := range []int{1, 1024, 1025, 3 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			res, body, err := tp.do(t, get(t, fmt.Sprintf("/big?bytes=%d", n)))
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Repeat("0123456789abcdef", n/16+1)[:n]
			if res.StatusCode != 200 || body != want || res.ContentLength != int64(n) {
				t.Errorf("%d, %d bytes (Content-Length %d), want %d", res.StatusCode, len(body), res.ContentLength, n)
			}
		})
	}
}

func TestTrailer(t *testing.T) {
	tp := newTestProbe(t)
	res, body, err := tp.do(t, get(t, "/trailer"))
	if err != nil {
		t.Fatal(err)
	}
	if body != tp.id+"\n" {
		t.Errorf("body %q", body)
	}
	want := http.Header{"X-Declared": {"declared"}, "X-Late": {"late"}}
	if !reflect.DeepEqual(res.Trailer, want) {
		t.Errorf("trailers %v, want %v", res.Trailer, want)
	}
}

func TestDeadline(t *testing.T) {
	tp := newTestProbe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, body, err := tp.do(t, get(t, "/deadline").WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	if _, err := fmt.Sscanf(strings.TrimPrefix(body, tp.id), " deadline %dms", &ms); err != nil || ms < 4900 || ms > 5000 {
		t.Errorf("%q, want about 5000ms left", body)
	}
}

func TestSlowGivesUp(t *testing.T) {
	tp := newTestProbe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	res, _, err := tp.do(t, get(t, "/slow?ms=60000").WithContext(ctx))
	if err == nil && res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want a deadline error or 504", res.StatusCode)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

func TestWait(t *testing.T) {
	tp := newTestProbe(t)
	file := filepath.Join(t.TempDir(), "go")
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		res, body, err := tp.do(t, get(t, "/wait?file="+file))
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{res.StatusCode, body, nil}
	}()
	select {
	case r := <-done:
		t.Fatalf("answered before the file existed: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.code != 200 || r.body != fmt.Sprintf("%s waited for %s\n", tp.id, file) {
			t.Errorf("%+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer once the file existed")
	}
}

func TestPanic(t *testing.T) {
	tp := newTestProbe(t)
	t.Run("before the head", func(t *testing.T) {
		res, body, err := tp.do(t, get(t, "/panic"))
		if err != nil || res.StatusCode != 500 || body != "Internal Server Error\n" {
			t.Errorf("%v %v %q", err, res, body)
		}
		if len(tp.log.Find("handler panicked")) == 0 {
			t.Errorf("panic not logged: %+v", tp.log.Find(""))
		}
	})
	t.Run("after the head", func(t *testing.T) {
		res, err := tp.Client().Do(get(t, "/panic?after=head"))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		line, err := bufio.NewReader(res.Body).ReadString('\n')
		if res.StatusCode != 200 || line != tp.id+"\n" {
			t.Errorf("%d %q", res.StatusCode, line)
		}
		if _, err := io.ReadAll(res.Body); err == nil {
			t.Error("the body ended cleanly after a panic")
		}
	})
}

func TestCrash(t *testing.T) {
	tp := newTestProbe(t)
	_, _, _ = tp.do(t, get(t, "/crash"))
	select {
	case code := <-tp.exits:
		if code != 2 {
			t.Errorf("exit code %d, want 2", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("/crash did not exit")
	}
	if got, want := tp.stderr.String(), tp.id+": crashing on request\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

func TestLog(t *testing.T) {
	tp := newTestProbe(t)
	res, body, err := tp.do(t, get(t, "/log?msg=hello+there"))
	if err != nil || res.StatusCode != 200 || body != fmt.Sprintf("%s logged %q\n", tp.id, "hello there") {
		t.Fatalf("%v %v %q", err, res, body)
	}
	if got := tp.stdio.String(); got != "hello there\n" {
		t.Errorf("stderr %q", got)
	}
	if !slices.ContainsFunc(tp.log.Find("hello there"), func(r testutil.Record) bool { return r.Attrs["probe"] == tp.id }) {
		t.Errorf("log %+v, want \"hello there\" with probe=%s", tp.log.Find(""), tp.id)
	}
}

func TestDNS(t *testing.T) {
	tp := newTestProbe(t)
	for _, qt := range []uint16{dns.TypeTXT, dns.TypeA} {
		q := new(dns.Msg)
		q.SetQuestion("anything.example.", qt)
		r, err := tp.Exchange(q)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != tp.id || !r.Authoritative {
			t.Errorf("type %d: %v", qt, r)
		}
	}
}
