package scgi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cgi"
	"net/url"
	"strconv"
	"strings"
)

// ErrMalformed is wrapped by every error about a request that breaks the
// SCGI protocol; the server answers those with Status: 400.
var ErrMalformed = errors.New("scgi: malformed request")

// maxLengthDigits bounds the netstring length prefix: 10 digits is more
// than any header block limit.
const maxLengthDigits = 10

// ReadRequest reads the header netstring of one SCGI request from br and
// returns its headers. The block may be at most maxHeader bytes (64 KiB
// when maxHeader is not positive). It checks
// what the protocol requires: CONTENT_LENGTH first, with a decimal value;
// SCGI present and "1"; names non-empty and unique. An empty connection
// returns io.EOF; a block cut short returns an error wrapping
// io.ErrUnexpectedEOF; I/O errors (a deadline) come back as they are; every
// other error wraps ErrMalformed. The body, CONTENT_LENGTH bytes, is left
// in br.
func ReadRequest(br *bufio.Reader, maxHeader int) (map[string]string, error) {
	if maxHeader <= 0 {
		maxHeader = defaultMaxHeader
	}
	n, err := readLength(br, maxHeader)
	if err != nil {
		return nil, err
	}
	block := make([]byte, n+1) // and the trailing comma
	if _, err := io.ReadFull(br, block); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("scgi: header block: %w", err)
	}
	if block[n] != ',' {
		return nil, fmt.Errorf("%w: header netstring does not end with a comma", ErrMalformed)
	}
	return parseHeaders(block[:n])
}

// readLength reads the netstring's "LEN:" prefix.
func readLength(br *bufio.Reader, maxHeader int) (int, error) {
	n := 0
	for i := 0; ; i++ {
		c, err := br.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if i == 0 && errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, fmt.Errorf("scgi: netstring length: %w", err)
		}
		switch {
		case c == ':' && i > 0:
			return n, nil
		case c < '0' || c > '9':
			return 0, fmt.Errorf("%w: netstring length: unexpected byte %q", ErrMalformed, c)
		case i == 1 && n == 0:
			return 0, fmt.Errorf("%w: netstring length has a leading zero", ErrMalformed)
		case i >= maxLengthDigits:
			return 0, fmt.Errorf("%w: netstring length is too long", ErrMalformed)
		}
		n = n*10 + int(c-'0')
		if n > maxHeader {
			// Refused at once: a client need not send the rest.
			return 0, fmt.Errorf("%w: header block of %d bytes or more, more than %d", ErrMalformed, n, maxHeader)
		}
	}
}

// parseHeaders splits the block into NUL-terminated name/value pairs.
func parseHeaders(block []byte) (map[string]string, error) {
	if len(block) == 0 {
		return nil, fmt.Errorf("%w: empty header block (CONTENT_LENGTH is required)", ErrMalformed)
	}
	if block[len(block)-1] != 0 {
		return nil, fmt.Errorf("%w: header block does not end with NUL", ErrMalformed)
	}
	fields := strings.Split(string(block[:len(block)-1]), "\x00")
	if len(fields)%2 != 0 {
		return nil, fmt.Errorf("%w: header %q has no value", ErrMalformed, clip(fields[len(fields)-1]))
	}
	h := make(map[string]string, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		name, value := fields[i], fields[i+1]
		switch {
		case name == "":
			return nil, fmt.Errorf("%w: empty header name", ErrMalformed)
		case i == 0 && name != "CONTENT_LENGTH":
			return nil, fmt.Errorf("%w: first header is %q, not CONTENT_LENGTH", ErrMalformed, clip(name))
		}
		if _, dup := h[name]; dup {
			return nil, fmt.Errorf("%w: header %q appears twice", ErrMalformed, clip(name))
		}
		h[name] = value
	}
	if _, err := contentLength(h["CONTENT_LENGTH"]); err != nil {
		return nil, err
	}
	switch v, ok := h["SCGI"]; {
	case !ok:
		return nil, fmt.Errorf("%w: no SCGI header", ErrMalformed)
	case v != "1":
		return nil, fmt.Errorf("%w: SCGI is %q, want 1", ErrMalformed, clip(v))
	}
	return h, nil
}

// contentLength parses CONTENT_LENGTH: decimal digits only.
func contentLength(s string) (int64, error) {
	if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w: CONTENT_LENGTH %q is not a decimal number", ErrMalformed, clip(s))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: CONTENT_LENGTH %q: %v", ErrMalformed, clip(s), err)
	}
	return n, nil
}

// NewRequest builds the request an HTTP server would have built from the
// headers of an SCGI request, with net/http/cgi's RequestFromMap: method,
// protocol, HTTP_* headers, Content-Type, ContentLength, TLS (HTTPS=on) and
// remote address. RequestURI is REQUEST_URI (or SCRIPT_NAME, PATH_INFO and
// QUERY_STRING), URL its origin form, and Host HTTP_HOST (or SERVER_NAME and
// SERVER_PORT). A missing SERVER_PROTOCOL means HTTP/1.0. The body is the
// caller's to set; h is not modified. Errors wrap ErrMalformed.
func NewRequest(h map[string]string) (*http.Request, error) {
	if m := h["REQUEST_METHOD"]; m != "" && !isToken(m) {
		return nil, fmt.Errorf("%w: REQUEST_METHOD %q is not a token", ErrMalformed, clip(m))
	}
	if h["SERVER_PROTOCOL"] == "" {
		h = maps.Clone(h)
		h["SERVER_PROTOCOL"] = "HTTP/1.0"
	}
	r, err := cgi.RequestFromMap(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	uri := h["REQUEST_URI"]
	if uri == "" {
		uri = h["SCRIPT_NAME"] + h["PATH_INFO"]
		if q := h["QUERY_STRING"]; q != "" {
			uri += "?" + q
		}
	}
	if uri == "" {
		uri = "/"
	}
	if r.URL, err = url.ParseRequestURI(uri); err != nil {
		return nil, fmt.Errorf("%w: REQUEST_URI %q: %v", ErrMalformed, clip(uri), err)
	}
	r.RequestURI = uri
	if r.Host == "" {
		r.Host = h["SERVER_NAME"]
		if p := h["SERVER_PORT"]; r.Host != "" && p != "" && p != "80" && p != "443" {
			r.Host = net.JoinHostPort(r.Host, p)
		}
	}
	// The front server framed the body as CONTENT_LENGTH bytes, whatever
	// its client's framing was.
	r.Header.Del("Content-Length")
	r.Header.Del("Transfer-Encoding")
	// nginx sends the Content-Type both as CONTENT_TYPE and HTTP_CONTENT_TYPE.
	if ct := h["CONTENT_TYPE"]; ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	if h["REMOTE_ADDR"] == "" {
		r.RemoteAddr = ""
	}
	return r, nil
}

// isToken reports whether s is an RFC 9110 token, as a method is.
func isToken(s string) bool {
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func clip(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
