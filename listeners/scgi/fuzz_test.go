package scgi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadRequest: no input makes the parser panic, and a request it
// accepts has CONTENT_LENGTH first, SCGI=1 and unique names, and becomes a
// request or a clean error.
func FuzzReadRequest(f *testing.F) {
	for _, c := range malformedCases {
		f.Add([]byte(c.raw))
	}
	f.Add(encode("body", "REQUEST_METHOD", "POST", "REQUEST_URI", "/x?y=1", "HTTP_HOST", "h"))
	f.Add(encode("", "REQUEST_METHOD", "GET"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := ReadRequest(bufio.NewReader(bytes.NewReader(raw)), 1<<10)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if _, ok := h[""]; ok {
			t.Fatalf("accepted an empty name: %q", raw)
		}
		if h["SCGI"] != "1" {
			t.Fatalf("accepted without SCGI=1: %q", raw)
		}
		if _, err := contentLength(h["CONTENT_LENGTH"]); err != nil {
			t.Fatalf("accepted a bad CONTENT_LENGTH: %q", raw)
		}
		if i := bytes.IndexByte(raw, ':'); !bytes.HasPrefix(raw[i+1:], []byte("CONTENT_LENGTH\x00")) {
			t.Fatalf("accepted with CONTENT_LENGTH not first: %q", raw)
		}
		r, err := NewRequest(h)
		if err == nil && (r.Method == "" || r.URL == nil) {
			t.Fatalf("request without method or URL from %q", raw)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("NewRequest: unexpected error kind: %v", err)
		}
	})
}
