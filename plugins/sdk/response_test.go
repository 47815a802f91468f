package sdk_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

func TestResponse(t *testing.T) {
	testutil.CheckGoroutines(t)
	writeErr := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/created", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Set-Cookie"] = []string{"a=1; Path=/", "b=2; Path=/"}
		h["X-Multi"] = []string{"z", "y", "x"}
		h.Set("Location", "/thing/1")
		w.WriteHeader(http.StatusCreated)
		h.Set("X-Late", "ignored") // after WriteHeader: not sent
		_, _ = io.WriteString(w, "created\n")
	})
	mux.HandleFunc("/implicit", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	mux.HandleFunc("/informational", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints) // the kernel's business: dropped
		w.WriteHeader(http.StatusAccepted)
	})
	for _, code := range []int{http.StatusNoContent, http.StatusNotModified} {
		mux.HandleFunc("/nobody/"+strconv.Itoa(code), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Code", strconv.Itoa(code))
			w.WriteHeader(code)
			_, err := w.Write([]byte("not allowed"))
			writeErr <- err
		})
	}
	mux.HandleFunc("/content-length", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		_, _ = w.Write([]byte("abc"))
		_, _ = w.Write([]byte("de"))
		_, err := w.Write([]byte("f"))
		writeErr <- err
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		n, err := io.WriteString(w, "hello, world")
		if n != 12 || err != nil {
			writeErr <- errors.New("HEAD: write failed: " + strconv.Itoa(n))
			return
		}
		writeErr <- nil
	})
	mux.HandleFunc("/head-declared", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
	})
	p := start(t, mux, sdktest.Options{})

	tests := []struct {
		name, method, path string
		code               int
		header             http.Header // must be present, exactly
		absent             []string
		body               string
		contentLength      int64
		writeErr           error // what the handler's last Write returned
	}{
		{
			name: "status and multi-valued headers", method: "GET", path: "/created", code: 201,
			header: http.Header{
				"Set-Cookie": {"a=1; Path=/", "b=2; Path=/"},
				"X-Multi":    {"z", "y", "x"},
				"Location":   {"/thing/1"},
			},
			absent: []string{"X-Late"}, body: "created\n", contentLength: 8,
		},
		{name: "implicit 200", method: "GET", path: "/implicit", code: 200, body: "ok", contentLength: 2},
		{name: "empty 200", method: "GET", path: "/empty", code: 200, body: "", contentLength: 0},
		{name: "status without body", method: "GET", path: "/teapot", code: 418, contentLength: 0},
		{name: "1xx is dropped", method: "GET", path: "/informational", code: 202, contentLength: 0},
		{
			name: "204 refuses a body", method: "GET", path: "/nobody/204", code: 204,
			header: http.Header{"X-Code": {"204"}}, absent: []string{"Content-Length"},
			contentLength: -1, writeErr: http.ErrBodyNotAllowed,
		},
		{
			name: "304 refuses a body", method: "GET", path: "/nobody/304", code: 304,
			header: http.Header{"X-Code": {"304"}}, absent: []string{"Content-Length"},
			contentLength: -1, writeErr: http.ErrBodyNotAllowed,
		},
		{
			name: "declared content length is enforced", method: "GET", path: "/content-length", code: 200,
			header: http.Header{"Content-Length": {"5"}}, body: "abcde", contentLength: 5,
			writeErr: http.ErrContentLength,
		},
		{
			name: "HEAD has the GET's length and no body", method: "HEAD", path: "/head", code: 200,
			header: http.Header{"Content-Length": {"12"}, "Content-Type": {"text/plain"}}, contentLength: 12,
		},
		{
			name: "HEAD of an empty answer has no length", method: "HEAD", path: "/empty", code: 200,
			absent: []string{"Content-Length"}, contentLength: -1,
		},
		{
			name: "HEAD keeps a declared length", method: "HEAD", path: "/head-declared", code: 200,
			header: http.Header{"Content-Length": {"1000"}}, contentLength: 1000,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b, err := do(t, p, newRequest(t, tt.method, "http://example.test"+tt.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.code {
				t.Errorf("status %d, want %d", res.StatusCode, tt.code)
			}
			for k, vs := range tt.header {
				if !reflect.DeepEqual(res.Header[k], vs) {
					t.Errorf("header %s = %q, want %q", k, res.Header[k], vs)
				}
			}
			for _, k := range tt.absent {
				if vs, ok := res.Header[k]; ok {
					t.Errorf("header %s = %q, want none", k, vs)
				}
			}
			if string(b) != tt.body {
				t.Errorf("body %q, want %q", b, tt.body)
			}
			if res.ContentLength != tt.contentLength {
				t.Errorf("ContentLength %d, want %d", res.ContentLength, tt.contentLength)
			}
			if tt.writeErr != nil || tt.path == "/head" {
				if err := recv(t, writeErr, 5*time.Second, "the handler's write"); !errors.Is(err, tt.writeErr) {
					t.Errorf("handler's Write returned %v, want %v", err, tt.writeErr)
				}
			}
		})
	}
}

func TestTrailers(t *testing.T) {
	testutil.CheckGoroutines(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Declared, X-Other")
		_, _ = io.WriteString(w, "body\n")
		w.Header().Set("X-Declared", "declared")
		w.Header()["X-Other"] = []string{"o1", "o2"}
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		b := pattern(1 << 20)
		_, _ = w.Write(b)
		w.Header().Set("X-Sum", sum(b))
		w.Header().Add(http.TrailerPrefix+"X-Undeclared", "u")
	})
	mux.HandleFunc("/flushed", func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "later")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	p := start(t, mux, sdktest.Options{})
	tests := []struct {
		path    string
		declare []string // in the Trailer header
		want    http.Header
		bodyLen int
	}{
		{"/small", []string{"X-Declared, X-Other"}, http.Header{"X-Declared": {"declared"}, "X-Other": {"o1", "o2"}, "X-Late": {"late"}}, 5},
		{"/big", []string{"X-Sum"}, http.Header{"X-Sum": {sum(pattern(1 << 20))}, "X-Undeclared": {"u"}}, 1 << 20},
		{"/flushed", nil, http.Header{"X-Late": {"late"}}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res, b, err := do(t, p, newRequest(t, "GET", "http://example.test"+tt.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.bodyLen {
				t.Errorf("body %d bytes, want %d", len(b), tt.bodyLen)
			}
			if !reflect.DeepEqual(res.Header["Trailer"], tt.declare) {
				t.Errorf("Trailer header %q, want %q", res.Header["Trailer"], tt.declare)
			}
			if res.ContentLength != -1 {
				t.Errorf("ContentLength %d: a response with trailers must not have one", res.ContentLength)
			}
			if !reflect.DeepEqual(res.Trailer, tt.want) {
				t.Errorf("trailers %v, want %v", res.Trailer, tt.want)
			}
		})
	}
}

// TestLargeResponse sends 10 MiB and checks that credit bounds what the
// plugin sends ahead of a reader that does not read.
func TestLargeResponse(t *testing.T) {
	testutil.CheckGoroutines(t)
	const size = 10 << 20
	body := pattern(size)
	var written atomic.Int64
	done := make(chan error, 1)
	p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for off := 0; off < size; off += 16 << 10 {
			n, err := w.Write(body[off:min(off+16<<10, size)])
			written.Add(int64(n))
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}), sdktest.Options{})

	t.Run("checksum", func(t *testing.T) {
		_, b, err := do(t, p, newRequest(t, "GET", "http://example.test/", nil))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != size || sum(b) != sum(body) {
			t.Errorf("got %d bytes, sum %s; want %d, %s", len(b), sum(b), size, sum(body))
		}
		if err := recv(t, done, 5*time.Second, "the handler"); err != nil {
			t.Error(err)
		}
	})

	t.Run("credit", func(t *testing.T) {
		written.Store(0)
		res, err := p.Client().Get("http://example.test/")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		first := make([]byte, 1)
		if _, err := io.ReadFull(res.Body, first); err != nil {
			t.Fatal(err)
		}
		// The kernel credits bytes back only as it writes them to the
		// client, so the handler stops after the initial credit (256 KiB)
		// plus what it buffers (one 32 KiB frame and one 16 KiB write).
		const bound = 256<<10 + 32<<10 + 16<<10
		var last int64 = -1
		testutil.WaitFor(t, 5*time.Second, "the handler to stall", func() bool {
			time.Sleep(50 * time.Millisecond)
			n := written.Load()
			stalled := n == last
			last = n
			return stalled
		})
		if last > bound || last < 128<<10 {
			t.Errorf("handler wrote %d bytes ahead of a stalled reader, want between 128 KiB and %d", last, bound)
		}
		rest, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if got := append(first, rest...); len(got) != size || sum(got) != sum(body) {
			t.Errorf("got %d bytes, want %d with the same sum", len(got), size)
		}
		if err := recv(t, done, 5*time.Second, "the handler"); err != nil {
			t.Error(err)
		}
	})
}

// TestFlush checks that a flushed response reaches the client while the
// handler still runs.
func TestFlush(t *testing.T) {
	testutil.CheckGoroutines(t)
	release := make(chan struct{})
	p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "third\n")
	}), sdktest.Options{})

	type result struct {
		res *http.Response
		err error
	}
	ch := make(chan result, 1)
	go func() {
		res, err := p.Client().Get("http://example.test/")
		ch <- result{res, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("no response head while the handler runs: Flush did not send it")
	}
	if r.err != nil {
		close(release)
		t.Fatal(r.err)
	}
	defer r.res.Body.Close()
	line := make(chan string, 1)
	br := bufio.NewReader(r.res.Body)
	go func() {
		s, _ := br.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s != "first\n" {
			t.Errorf("first line %q", s)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("the first line did not arrive before the handler finished")
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "second\nthird\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestDeadline(t *testing.T) {
	testutil.CheckGoroutines(t)
	type report struct {
		deadline   time.Time
		ok         bool
		err, cause error
	}
	reports := make(chan report, 1)
	p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, ok := r.Context().Deadline()
		if r.URL.Path == "/block" {
			<-r.Context().Done()
		}
		reports <- report{d, ok, r.Context().Err(), context.Cause(r.Context())}
	}), sdktest.Options{})

	t.Run("crosses", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		want, _ := ctx.Deadline()
		t0 := time.Now()
		if _, _, err := do(t, p, newRequest(t, "GET", "http://example.test/", nil).WithContext(ctx)); err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		r := recv(t, reports, 5*time.Second, "the handler")
		if !r.ok {
			t.Fatal("the handler's context has no deadline")
		}
		// The budget crosses as time left, so the handler's deadline is
		// the caller's moved later by the time in transit: never
		// earlier, and never by more than the whole call took.
		if diff := r.deadline.Sub(want); diff < 0 || diff > took {
			t.Errorf("handler's deadline is %v off the caller's; the call took %v", diff, took)
		}
	})

	t.Run("expires", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		res, err := p.Client().Do(newRequest(t, "GET", "http://example.test/block", nil).WithContext(ctx))
		if err == nil {
			// The kernel answered 504 before the client saw its own
			// deadline pass.
			res.Body.Close()
			if res.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("status %d, want 504 or a deadline error", res.StatusCode)
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want a deadline", err)
		}
		r := recv(t, reports, 5*time.Second, "the handler")
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("handler's context ended with %v (cause %v), want a deadline", r.err, r.cause)
		}
	})
}

func TestCancel(t *testing.T) {
	testutil.CheckGoroutines(t)
	started := make(chan struct{}, 1)
	type report struct {
		err, cause, writeErr error
	}
	reports := make(chan report, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/wait", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		reports <- report{err: r.Context().Err(), cause: context.Cause(r.Context())}
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		chunk := pattern(4 << 10)
		for {
			if _, err := w.Write(chunk); err != nil {
				reports <- report{err: r.Context().Err(), cause: context.Cause(r.Context()), writeErr: err}
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	p := start(t, mux, sdktest.Options{})

	t.Run("before the head", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			res, err := p.Client().Do(newRequest(t, "GET", "http://example.test/wait", nil).WithContext(ctx))
			if err == nil {
				res.Body.Close()
			}
			errc <- err
		}()
		recv(t, started, 5*time.Second, "the handler to start")
		cancel()
		if err := recv(t, errc, 5*time.Second, "the client"); !errors.Is(err, context.Canceled) {
			t.Errorf("client error %v, want context.Canceled", err)
		}
		r := recv(t, reports, 5*time.Second, "the handler's context to end")
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("handler's context error %v", r.err)
		}
		if r.cause == nil || r.cause.Error() == context.Canceled.Error() {
			t.Errorf("handler's context cause %v, want the kernel's cancellation", r.cause)
		}
	})

	t.Run("while streaming", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res, err := p.Client().Do(newRequest(t, "GET", "http://example.test/stream", nil).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		recv(t, started, 5*time.Second, "the handler to start")
		if _, err := io.ReadFull(res.Body, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := io.ReadAll(res.Body); !errors.Is(err, context.Canceled) {
			t.Errorf("body read after cancel: %v, want context.Canceled", err)
		}
		r := recv(t, reports, 5*time.Second, "the handler's write to fail")
		if r.writeErr == nil || !errors.Is(r.err, context.Canceled) {
			t.Errorf("handler: write error %v, context error %v", r.writeErr, r.err)
		}
	})

	t.Run("body closed early", func(t *testing.T) {
		res, err := p.Client().Get("http://example.test/stream")
		if err != nil {
			t.Fatal(err)
		}
		recv(t, started, 5*time.Second, "the handler to start")
		if _, err := io.ReadFull(res.Body, make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		r := recv(t, reports, 5*time.Second, "the handler's write to fail")
		if r.writeErr == nil || !errors.Is(r.err, context.Canceled) {
			t.Errorf("handler: write error %v, context error %v", r.writeErr, r.err)
		}
	})
}

// TestUnreadBody leaves a response body unread and unclosed: sdktest must
// still end the call when the test ends, leaving no goroutine behind.
func TestUnreadBody(t *testing.T) {
	testutil.CheckGoroutines(t)
	t.Run("forgetful test", func(t *testing.T) {
		p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(pattern(1 << 20))
		}), sdktest.Options{})
		res, err := p.Client().Get("http://example.test/")
		if err != nil {
			t.Fatal(err)
		}
		_ = res // deliberately neither read nor closed
	})
}
