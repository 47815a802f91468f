package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// cgiCases are CGI handlers and what a client gets from them, through the
// kernel's side of the protocol and through plain net/http alike.
var cgiCases = []struct {
	name   string
	out    []string // written in these pieces
	method string
	code   int
	header map[string]string
	body   string
}{
	{name: "status", out: []string{"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope"}, code: 404,
		header: map[string]string{"Content-Type": "text/plain"}, body: "nope"},
	{name: "location is 302", out: []string{"Location: http://example.test/there\n\n"}, code: 302,
		header: map[string]string{"Location": "http://example.test/there"}},
	{name: "status with location", out: []string{"Status: 301 Moved Permanently\nLocation: /new\n\n"}, code: 301,
		header: map[string]string{"Location": "/new"}},
	{name: "default content type", out: []string{"X-Thing: 1\n", "\n<p>hi</p>"}, code: 200,
		header: map[string]string{"Content-Type": "text/html", "X-Thing": "1"}, body: "<p>hi</p>"},
	{name: "head split across writes", out: []string{"Sta", "tus: 201 Created\nContent-", "Type: text/plain\n", "\n", "made"}, code: 201, body: "made"},
	{name: "large body", out: []string{"Content-Type: text/plain\n\n", strings.Repeat("x", 300<<10)}, code: 200, body: strings.Repeat("x", 300<<10)},
	{name: "HEAD", method: http.MethodHead, out: []string{"Status: 202 Accepted\n\nbody"}, code: 202},
	{name: "malformed status is 502", out: []string{"Status: two hundred\n\nsecret"}, code: 502},
	{name: "no blank line is 502", out: []string{"Content-Type: text/plain\n"}, code: 502},
	{name: "no output is 502", out: nil, code: 502},
	{name: "no header fields is 502", out: []string{"\nbody"}, code: 502},
}

func cgiHandler(pieces []string) http.Handler {
	return sdk.CGI(func(out io.Writer, r *http.Request) {
		for _, p := range pieces {
			io.WriteString(out, p)
		}
	})
}

func TestCGI(t *testing.T) {
	for _, tt := range cgiCases {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			check := func(t *testing.T, res *http.Response, body []byte) {
				t.Helper()
				if res.StatusCode != tt.code {
					t.Errorf("status %d, want %d (body %q)", res.StatusCode, tt.code, clip(body))
				}
				for k, v := range tt.header {
					if got := res.Header.Get(k); got != v {
						t.Errorf("%s: %q, want %q", k, got, v)
					}
				}
				if tt.code == 502 {
					if strings.Contains(string(body), "secret") {
						t.Errorf("502 carries the malformed output's body: %q", body)
					}
				} else if string(body) != tt.body {
					t.Errorf("body %q, want %q", clip(body), clip([]byte(tt.body)))
				}
			}
			t.Run("kernel", func(t *testing.T) {
				p := start(t, cgiHandler(tt.out), sdktest.Options{})
				req, _ := http.NewRequest(method, "http://x.test/cgi", nil)
				res, err := (&http.Client{Transport: p, CheckRedirect: noRedirect}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				body, _ := io.ReadAll(res.Body)
				check(t, res, body)
			})
			t.Run("net/http", func(t *testing.T) {
				srv := httptest.NewServer(cgiHandler(tt.out))
				defer srv.Close()
				req, _ := http.NewRequest(method, srv.URL+"/cgi", nil)
				res, err := (&http.Client{CheckRedirect: noRedirect}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				body, _ := io.ReadAll(res.Body)
				check(t, res, body)
			})
		})
	}
}

// TestCGIWrapped: a handler whose ResponseWriter a middleware hides gets
// its CGI output parsed in the plugin, with the same rules.
func TestCGIWrapped(t *testing.T) {
	inner := cgiHandler([]string{"Status: 303 See Other\nLocation: /x\n\n"})
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(struct{ http.ResponseWriter }{w}, r) // hides Unwrap
	})
	p := start(t, wrapped, sdktest.Options{})
	req, _ := http.NewRequest(http.MethodGet, "http://x.test/", nil)
	res, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 303 || res.Header.Get("Location") != "/x" {
		t.Fatalf("got %d Location %q", res.StatusCode, res.Header.Get("Location"))
	}
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	var host *sdk.Host
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host = sdk.HostFrom(r.Context())
	})
	p := start(t, h, sdktest.Options{})
	req, _ := http.NewRequest(http.MethodGet, "http://x.test/", nil)
	if _, _, err := do(t, p, req); err != nil {
		t.Fatal(err)
	}
	if _, err := host.Get(ctx, "missing"); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Get missing: %v", err)
	}
	if err := host.Delete(ctx, "missing"); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Delete missing: %v", err)
	}
	for _, bad := range []string{"", "a\x00b", strings.Repeat("k", 1025)} {
		if err := host.Put(ctx, bad, []byte("v")); !errors.Is(err, sdk.ErrBadKey) {
			t.Errorf("Put %q: %v", bad, err)
		}
	}
	big := make([]byte, 2<<20) // over gRPC's default 4 MiB would need more; this crosses 1 MiB
	for i := range 3 {
		if err := host.Put(ctx, fmt.Sprintf("m/%d", i), big[:i<<20]); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	if err := host.Put(ctx, "other", []byte("o")); err != nil {
		t.Fatal(err)
	}
	es, err := host.List(ctx, "m/")
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Entry{{"m/0", 0}, {"m/1", 1 << 20}, {"m/2", 2 << 20}}
	if fmt.Sprint(es) != fmt.Sprint(want) {
		t.Errorf("List = %v, want %v", es, want)
	}
	v, err := host.Get(ctx, "m/2")
	if err != nil || len(v) != 2<<20 {
		t.Errorf("Get m/2: %d bytes, %v", len(v), err)
	}
	if err := host.Delete(ctx, "m/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Store().Get(ctx, "m/1"); err == nil {
		t.Error("m/1 still in the store after Delete")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := host.Put(cancelled, "late", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v", err)
	}
	if _, err := sdk.HostFrom(ctx).Get(ctx, "k"); !errors.Is(err, sdk.ErrNoKernel) {
		t.Errorf("Get outside a call: %v", err)
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
