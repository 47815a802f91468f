package scgi

import (
	"bufio"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
)

// nginxParams are the headers nginx's scgi_params send for a GET with a query.
var nginxParams = []string{
	"REQUEST_METHOD", "GET", "REQUEST_URI", "/inbox/messages?since=3&x=%20y", "QUERY_STRING", "since=3&x=%20y",
	"CONTENT_TYPE", "", "DOCUMENT_URI", "/inbox/messages", "DOCUMENT_ROOT", "/var/www", "SCGI", "1",
	"SERVER_PROTOCOL", "HTTP/1.1", "REQUEST_SCHEME", "http", "REMOTE_ADDR", "192.0.2.7", "REMOTE_PORT", "51234",
	"SERVER_PORT", "80", "SERVER_NAME", "gw.example", "HTTP_HOST", "gw.example:8080", "HTTP_USER_AGENT", "curl/8.5.0",
	"HTTP_ACCEPT", "*/*", "HTTP_X_FORWARDED_FOR", "198.51.100.1, 203.0.113.9",
}

func TestReadRequest(t *testing.T) {
	valid := []struct {
		name  string
		raw   string
		max   int
		want  map[string]string // a subset of the headers
		rest  string            // what is left in the reader: the body
		count int               // the number of headers
	}{
		{name: "nginx GET", raw: ns("CONTENT_LENGTH\x000\x00" + strings.Join(nginxParams, "\x00") + "\x00"),
			want:  map[string]string{"CONTENT_LENGTH": "0", "SCGI": "1", "CONTENT_TYPE": "", "HTTP_HOST": "gw.example:8080"},
			count: 1 + len(nginxParams)/2},
		{name: "POST leaves the body", raw: string(encode("a=1&b=2", "REQUEST_METHOD", "POST", "REQUEST_URI", "/form",
			"CONTENT_TYPE", "application/x-www-form-urlencoded")) + "trailing",
			want: map[string]string{"CONTENT_LENGTH": "7", "REQUEST_METHOD": "POST"}, rest: "a=1&b=2trailing", count: 5},
		{name: "minimal", raw: ns("CONTENT_LENGTH\x000\x00SCGI\x001\x00"), want: map[string]string{"SCGI": "1"}, count: 2},
		{name: "empty values and NUL-free bytes", raw: ns("CONTENT_LENGTH\x0000\x00SCGI\x001\x00X\x00\x00Y\x00\xff=\r\n\x00"),
			want: map[string]string{"CONTENT_LENGTH": "00", "X": "", "Y": "\xff=\r\n"}, count: 4},
		{name: "block exactly at the limit", raw: ns("CONTENT_LENGTH\x000\x00SCGI\x001\x00P\x00" + strings.Repeat("v", 73) + "\x00"),
			max: 100, count: 3},
		{name: "default limit", raw: ns("CONTENT_LENGTH\x000\x00SCGI\x001\x00P\x00" + strings.Repeat("v", 60<<10) + "\x00"),
			max: -1, count: 3},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			br := bufio.NewReader(strings.NewReader(tt.raw))
			h, err := ReadRequest(br, max)
			if err != nil {
				t.Fatal(err)
			}
			if len(h) != tt.count {
				t.Errorf("%d headers, want %d: %q", len(h), tt.count, h)
			}
			for k, v := range tt.want {
				if got, ok := h[k]; !ok || got != v {
					t.Errorf("%s = %q (present %v), want %q", k, got, ok, v)
				}
			}
			if rest, _ := io.ReadAll(br); string(rest) != tt.rest {
				t.Errorf("left %q, want %q", rest, tt.rest)
			}
		})
	}

	t.Run("over the limit", func(t *testing.T) {
		raw := ns("CONTENT_LENGTH\x000\x00SCGI\x001\x00P\x00" + strings.Repeat("v", 74) + "\x00")
		if _, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), 100); !errors.Is(err, ErrMalformed) {
			t.Errorf("err = %v, want ErrMalformed", err)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		if _, err := ReadRequest(bufio.NewReader(strings.NewReader("")), 100); err != io.EOF {
			t.Errorf("err = %v, want io.EOF", err)
		}
	})
	// The malformed cases the server answers 400 fail ReadRequest or
	// NewRequest with ErrMalformed; those it closes are cut short.
	for _, tt := range malformedCases {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ReadRequest(bufio.NewReader(strings.NewReader(tt.raw)), 1000)
			if err == nil {
				_, err = NewRequest(h)
			}
			want := ErrMalformed
			if tt.status == 0 {
				want = io.ErrUnexpectedEOF
			}
			if !errors.Is(err, want) || !strings.Contains(err.Error(), tt.log) {
				t.Errorf("err = %v, want %v mentioning %q", err, want, tt.log)
			}
		})
	}
}

func TestNewRequest(t *testing.T) {
	params := func(pairs ...string) map[string]string {
		h := map[string]string{"CONTENT_LENGTH": "0", "SCGI": "1"}
		for i := 0; i < len(pairs); i += 2 {
			h[pairs[i]] = pairs[i+1]
		}
		return h
	}
	type want struct {
		method, uri, path, query, host, remote, proto string
		tls                                           bool
	}
	tests := []struct {
		name   string
		h      map[string]string
		want   want
		header map[string]string
	}{
		{name: "nginx GET with query", h: params(nginxParams...), want: want{
			method: "GET", uri: "/inbox/messages?since=3&x=%20y", path: "/inbox/messages", query: "since=3&x=%20y",
			host: "gw.example:8080", remote: "192.0.2.7:51234", proto: "HTTP/1.1",
		}, header: map[string]string{"User-Agent": "curl/8.5.0", "Accept": "*/*", "X-Forwarded-For": "198.51.100.1, 203.0.113.9", "Content-Type": ""}},
		{name: "POST with type and length", h: params("CONTENT_LENGTH", "12", "REQUEST_METHOD", "POST", "REQUEST_URI", "/m",
			"CONTENT_TYPE", "text/plain", "HTTP_CONTENT_TYPE", "text/plain", "HTTP_CONTENT_LENGTH", "12", "HTTP_X_FOO", "bar",
			"HTTPS", "on", "HTTP_HOST", "h.test"), want: want{
			method: "POST", uri: "/m", path: "/m", host: "h.test", proto: "HTTP/1.0", tls: true,
		}, header: map[string]string{"Content-Type": "text/plain", "X-Foo": "bar", "Content-Length": ""}},
		{name: "CGI path variables", h: params("REQUEST_METHOD", "GET", "SCRIPT_NAME", "/app", "PATH_INFO", "/a b",
			"QUERY_STRING", "q=1", "SERVER_NAME", "srv.test", "SERVER_PORT", "8080", "SERVER_PROTOCOL", "HTTP/1.1"), want: want{
			method: "GET", uri: "/app/a b?q=1", path: "/app/a b", query: "q=1", host: "srv.test:8080", proto: "HTTP/1.1",
		}},
		{name: "default port and no URI", h: params("REQUEST_METHOD", "DELETE", "SERVER_NAME", "srv.test", "SERVER_PORT", "80"),
			want: want{method: "DELETE", uri: "/", path: "/", host: "srv.test", proto: "HTTP/1.0"}},
		{name: "OPTIONS *", h: params("REQUEST_METHOD", "OPTIONS", "REQUEST_URI", "*"),
			want: want{method: "OPTIONS", uri: "*", path: "*", proto: "HTTP/1.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := maps.Clone(tt.h)
			r, err := NewRequest(tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(orig, tt.h) {
				t.Error("NewRequest modified its argument")
			}
			got := want{method: r.Method, uri: r.RequestURI, path: r.URL.Path, query: r.URL.RawQuery, host: r.Host,
				remote: r.RemoteAddr, proto: r.Proto, tls: r.TLS != nil}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			for k, v := range tt.header {
				if r.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q (all: %v)", k, r.Header.Get(k), v, r.Header)
				}
			}
			if r.Header.Get("Host") != "" || !r.Close || r.URL.Host != "" || r.URL.Scheme != "" {
				t.Errorf("not shaped as a server request: %+v", r)
			}
		})
	}

	bad := []struct{ name, key, value string }{
		{"no method", "REQUEST_METHOD", ""},
		{"method not a token", "REQUEST_METHOD", "GET /x"},
		{"bad protocol", "SERVER_PROTOCOL", "SPDY"},
		{"bad URI", "REQUEST_URI", "no-slash"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			h := params("REQUEST_METHOD", "GET", "REQUEST_URI", "/")
			h[tt.key] = tt.value
			if _, err := NewRequest(h); !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}
