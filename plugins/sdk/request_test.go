package sdk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// seen is what the echo handler reports about the request it got.
type seen struct {
	Method           string
	RequestURI       string
	Path             string
	RawPath          string
	RawQuery         string
	Query            map[string][]string
	Proto            string
	Host             string
	Header           http.Header
	RemoteAddr       string
	ContentLength    int64
	TransferEncoding []string
	BodyLen          int
	BodySHA256       string
	BodyErr          string
	Listener         string
	LocalAddr        string
	TLS              bool
	HasDeadline      bool
}

// echo answers with what it saw of the request, as JSON.
func echo(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	s := seen{
		Method:           r.Method,
		RequestURI:       r.RequestURI,
		Path:             r.URL.Path,
		RawPath:          r.URL.RawPath,
		RawQuery:         r.URL.RawQuery,
		Query:            r.URL.Query(),
		Proto:            r.Proto,
		Host:             r.Host,
		Header:           r.Header,
		RemoteAddr:       r.RemoteAddr,
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
		BodyLen:          int(n),
		BodySHA256:       hex.EncodeToString(h.Sum(nil)),
		Listener:         sdk.ListenerFrom(r.Context()),
		TLS:              r.TLS != nil,
	}
	if err != nil {
		s.BodyErr = err.Error()
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		s.LocalAddr = a.String()
	}
	_, s.HasDeadline = r.Context().Deadline()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}

func TestRequestFields(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := start(t, http.HandlerFunc(echo), sdktest.Options{Listener: "web"})
	tests := []struct {
		name   string
		req    func(t *testing.T) *http.Request
		check  func(t *testing.T, s seen)
		status int
	}{
		{
			name: "plain GET",
			req:  func(t *testing.T) *http.Request { return newRequest(t, "GET", "http://example.test/", nil) },
			check: func(t *testing.T, s seen) {
				want := seen{
					Method: "GET", RequestURI: "/", Path: "/", Query: map[string][]string{},
					Proto: "HTTP/1.1", Host: "example.test", Header: http.Header{},
					RemoteAddr: "192.0.2.1:1234", BodySHA256: sum(nil), Listener: "web",
				}
				if !reflect.DeepEqual(s, want) {
					t.Errorf("got  %+v\nwant %+v", s, want)
				}
			},
		},
		{
			name: "custom method",
			req:  func(t *testing.T) *http.Request { return newRequest(t, "PURGE", "http://example.test/cache/x", nil) },
			check: func(t *testing.T, s seen) {
				if s.Method != "PURGE" || s.Path != "/cache/x" {
					t.Errorf("method %q path %q", s.Method, s.Path)
				}
			},
		},
		{
			name: "WebDAV method with body",
			req: func(t *testing.T) *http.Request {
				return newRequest(t, "PROPFIND", "http://example.test/dav/", bytes.NewReader([]byte("<propfind/>")))
			},
			check: func(t *testing.T, s seen) {
				if s.Method != "PROPFIND" || s.BodyLen != len("<propfind/>") || s.ContentLength != int64(len("<propfind/>")) {
					t.Errorf("method %q body %d content-length %d", s.Method, s.BodyLen, s.ContentLength)
				}
			},
		},
		{
			name: "escaped path and query",
			req: func(t *testing.T) *http.Request {
				return newRequest(t, "GET", "http://example.test/a%2Fb/c%20d/%C3%A9?x=1&y=%26z&x=2&e=%C3%A9", nil)
			},
			check: func(t *testing.T, s seen) {
				if s.RequestURI != "/a%2Fb/c%20d/%C3%A9?x=1&y=%26z&x=2&e=%C3%A9" {
					t.Errorf("RequestURI %q", s.RequestURI)
				}
				if s.Path != "/a/b/c d/é" || s.RawPath != "/a%2Fb/c%20d/%C3%A9" {
					t.Errorf("Path %q RawPath %q", s.Path, s.RawPath)
				}
				if s.RawQuery != "x=1&y=%26z&x=2&e=%C3%A9" {
					t.Errorf("RawQuery %q", s.RawQuery)
				}
				want := map[string][]string{"x": {"1", "2"}, "y": {"&z"}, "e": {"é"}}
				if !reflect.DeepEqual(s.Query, want) {
					t.Errorf("Query %v, want %v", s.Query, want)
				}
			},
		},
		{
			name: "options asterisk",
			req: func(t *testing.T) *http.Request {
				req := newRequest(t, "OPTIONS", "http://example.test/", nil)
				req.URL.Path, req.URL.Opaque = "", "*"
				return req
			},
			check: func(t *testing.T, s seen) {
				if s.RequestURI != "*" || s.Path != "*" {
					t.Errorf("RequestURI %q Path %q", s.RequestURI, s.Path)
				}
			},
		},
		{
			name: "host differs from URL",
			req: func(t *testing.T) *http.Request {
				req := newRequest(t, "GET", "http://127.0.0.1:8080/", nil)
				req.Host = "virtual.example:8443"
				return req
			},
			check: func(t *testing.T, s seen) {
				if s.Host != "virtual.example:8443" {
					t.Errorf("Host %q", s.Host)
				}
			},
		},
		{
			name: "multi-valued headers keep their order",
			req: func(t *testing.T) *http.Request {
				req := newRequest(t, "GET", "http://example.test/", nil)
				req.Header["X-Multi"] = []string{"c", "a", "b"}
				req.Header.Add("Accept", "text/html")
				req.Header.Add("Accept", "application/json;q=0.9")
				req.Header.Set("X-Empty", "")
				return req
			},
			check: func(t *testing.T, s seen) {
				want := http.Header{
					"X-Multi": {"c", "a", "b"},
					"Accept":  {"text/html", "application/json;q=0.9"},
					"X-Empty": {""},
				}
				if !reflect.DeepEqual(s.Header, want) {
					t.Errorf("Header %v, want %v", s.Header, want)
				}
			},
		},
		{
			name: "remote address, local address, TLS",
			req: func(t *testing.T) *http.Request {
				req := newRequest(t, "GET", "https://example.test/", nil)
				la := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
				req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(la)))
				req.RemoteAddr = "[2001:db8::1]:40000"
				req.TLS = &tls.ConnectionState{HandshakeComplete: true}
				return req
			},
			check: func(t *testing.T, s seen) {
				if s.RemoteAddr != "[2001:db8::1]:40000" || s.LocalAddr != "127.0.0.1:8443" || !s.TLS {
					t.Errorf("RemoteAddr %q LocalAddr %q TLS %v", s.RemoteAddr, s.LocalAddr, s.TLS)
				}
			},
		},
		{
			name: "content length",
			req: func(t *testing.T) *http.Request {
				return newRequest(t, "POST", "http://example.test/", bytes.NewReader(pattern(1000)))
			},
			check: func(t *testing.T, s seen) {
				if s.ContentLength != 1000 || s.TransferEncoding != nil || s.BodyLen != 1000 || s.BodySHA256 != sum(pattern(1000)) {
					t.Errorf("ContentLength %d TransferEncoding %v body %d %s", s.ContentLength, s.TransferEncoding, s.BodyLen, s.BodyErr)
				}
			},
		},
		{
			name: "chunked body",
			req: func(t *testing.T) *http.Request {
				// A reader of unknown length goes chunked.
				return newRequest(t, "POST", "http://example.test/", io.MultiReader(bytes.NewReader(pattern(1000))))
			},
			check: func(t *testing.T, s seen) {
				if s.ContentLength != -1 || !reflect.DeepEqual(s.TransferEncoding, []string{"chunked"}) || s.BodyLen != 1000 || s.BodySHA256 != sum(pattern(1000)) {
					t.Errorf("ContentLength %d TransferEncoding %v body %d %s", s.ContentLength, s.TransferEncoding, s.BodyLen, s.BodyErr)
				}
			},
		},
		{
			name: "no deadline without one",
			req:  func(t *testing.T) *http.Request { return newRequest(t, "GET", "http://example.test/", nil) },
			check: func(t *testing.T, s seen) {
				if s.HasDeadline {
					t.Error("the handler's context has a deadline the caller did not set")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b, err := do(t, p, tt.req(t))
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, b)
			}
			var s seen
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			tt.check(t, s)
		})
	}
}

// TestBodies sends bodies around the inline limit and far above it, with a
// known length and chunked, and has the handler send each back.
func TestBodies(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Len", strconv.Itoa(len(b)))
		w.Header().Set("X-Sum", sum(b))
		w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
		_, _ = w.Write(b)
	}), sdktest.Options{})
	for _, size := range []int{0, 1, 64 << 10, 64<<10 + 1, 5 << 20} {
		for _, chunked := range []bool{false, true} {
			name := strconv.Itoa(size)
			if chunked {
				name += " chunked"
			}
			t.Run(name, func(t *testing.T) {
				body := pattern(size)
				var r io.Reader = bytes.NewReader(body)
				wantCL := int64(size)
				if chunked {
					r = io.MultiReader(r)
					wantCL = -1
				}
				res, got, err := do(t, p, newRequest(t, "PUT", "http://example.test/", r))
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %.200s", res.StatusCode, got)
				}
				if h := res.Header.Get("X-Content-Length"); h != strconv.FormatInt(wantCL, 10) {
					t.Errorf("handler saw ContentLength %s, want %d", h, wantCL)
				}
				if res.Header.Get("X-Len") != strconv.Itoa(size) || res.Header.Get("X-Sum") != sum(body) {
					t.Errorf("handler read %s bytes (sum %s), want %d (%s)", res.Header.Get("X-Len"), res.Header.Get("X-Sum"), size, sum(body))
				}
				if len(got) != size || sum(got) != sum(body) {
					t.Errorf("response body %d bytes, sum %s; want %d, %s", len(got), sum(got), size, sum(body))
				}
			})
		}
	}
}

// TestCloseWakesBodyRead: closing a streamed request body ends a Read that
// waits for more, as closing a pipe does, so a handler can stop reading a
// slow upload without waiting for its deadline.
func TestCloseWakesBodyRead(t *testing.T) {
	p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first := make([]byte, 4)
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		readErr := make(chan error, 1)
		go func() {
			_, err := r.Body.Read(make([]byte, 10)) // blocks: the client sends nothing more
			readErr <- err
		}()
		time.Sleep(20 * time.Millisecond) // let the Read block, usually
		r.Body.Close()
		select {
		case err := <-readErr:
			fmt.Fprintf(w, "read ended: %v", err != nil)
		case <-time.After(10 * time.Second):
			http.Error(w, "Read still blocked 10s after Close", 500)
		}
	}), sdktest.Options{})
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("abcd")) // then nothing, until the test ends
	req, _ := http.NewRequest("POST", "http://x.test/", pr)
	req.ContentLength = -1
	res, body, err := do(t, p, req)
	if err != nil || res.StatusCode != 200 || string(body) != "read ended: true" {
		t.Fatalf("%v %q %v", res, body, err)
	}
}
