package scgi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/nginx"
	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestNginx puts a real nginx (scgi_pass over a UNIX socket) in front of a
// Server. It fails when nginx is missing under CI=true and skips otherwise.
func TestNginx(t *testing.T) {
	if _, err := nginx.Path(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	cancelled := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { echo(w, r) })
	mux.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("/ignore", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ignored") })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		cancelled <- context.Cause(r.Context())
	})

	dir := testutil.ShortDir(t)
	ts := startServerAt(t, "unix", dir+"/s.sock", Config{MaxBody: 2 << 20}, handlerDispatcher{h: mux})
	addr, err := nginx.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ng, err := nginx.Start(ctx, nginx.Config{Dir: dir, Routes: []nginx.Route{{Listen: addr, SCGI: "unix:" + ts.addr}}})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ng.Stop()
		if t.Failed() {
			t.Logf("nginx error log:\n%s", ng.ErrorLog())
		}
	})
	base := "http://" + addr

	do := func(t *testing.T, method, path string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: reading the answer: %v", method, path, err)
		}
		return resp.StatusCode, string(b)
	}

	t.Run("GET with query", func(t *testing.T) {
		code, body := do(t, "GET", "/echo?a=1&b=%20", nil)
		if code != 200 || !bytes.Contains([]byte(body), []byte(`"uri":"/echo?a=1\u0026b=%20"`)) ||
			!bytes.Contains([]byte(body), []byte(`"remote":"127.0.0.1:`)) {
			t.Errorf("%d %s", code, body)
		}
	})
	t.Run("1 MiB body", func(t *testing.T) {
		data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
		sum := sha256.Sum256(data)
		code, body := do(t, "POST", "/sum", data)
		if want := fmt.Sprintf("%d %s", len(data), hex.EncodeToString(sum[:])); code != 200 || body != want {
			t.Errorf("%d %q, want %q", code, body, want)
		}
	})
	t.Run("body ignored", func(t *testing.T) {
		for range 3 {
			if code, body := do(t, "POST", "/ignore", bytes.Repeat([]byte("x"), 1<<20)); code != 200 || body != "ignored" {
				t.Errorf("%d %q", code, body)
			}
		}
	})
	t.Run("413", func(t *testing.T) {
		for range 3 {
			if code, body := do(t, "POST", "/sum", bytes.Repeat([]byte("x"), 8<<20)); code != 413 {
				t.Errorf("%d %q", code, body)
			}
		}
	})
	t.Run("client gone", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/hang", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("answer %d from a hanging handler", resp.StatusCode)
		}
		select {
		case err := <-cancelled:
			if !errors.Is(err, errClientGone) {
				t.Errorf("cause %v, want errClientGone", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the handler was not told that nginx's client went away")
		}
	})
}
