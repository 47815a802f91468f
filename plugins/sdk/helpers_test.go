package sdk_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// start runs h as a plugin in memory.
func start(t *testing.T, h http.Handler, o sdktest.Options) *sdktest.Plugin {
	t.Helper()
	p, err := sdktest.Start(t, sdk.Plugin{Name: "t", Version: "v0", HTTP: h}, nil, o)
	if err != nil {
		t.Fatalf("sdktest.Start: %v", err)
	}
	return p
}

// do sends req and returns the response with its body read; a body read
// error is returned with what was read.
func do(t *testing.T, p *sdktest.Plugin, req *http.Request) (*http.Response, []byte, error) {
	t.Helper()
	res, err := p.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

func newRequest(t *testing.T, method, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pattern returns n bytes that are not all alike.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// recv returns the next value from ch, failing t after d.
func recv[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}
