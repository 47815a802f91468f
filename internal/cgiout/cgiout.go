package cgiout

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// MaxHeader bounds the header block of CGI output, in bytes.
const MaxHeader = 64 << 10

// ErrMalformed is wrapped by every error about output that breaks the CGI
// rules.
var ErrMalformed = errors.New("cgi: malformed output")

// Head is the response a CGI header block describes, with the rules
// applied: Status is the final code (200 to 999) and Header holds the other
// fields, canonicalised, with a Content-Type.
type Head struct {
	Status int
	Header http.Header
}

// HeaderEnd returns the length of the header block at the start of out,
// including the blank line that ends it, or -1 when out holds no whole
// block yet. Lines end with LF or CRLF.
func HeaderEnd(out []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(out[i:], '\n')
		if j < 0 {
			return -1
		}
		line := out[i : i+j]
		i += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return i
		}
	}
}

// hopByHop are fields that describe one connection's framing; the server
// that writes the response frames it itself.
var hopByHop = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
}

// ParseHeader parses a whole header block, as HeaderEnd delimits it, and
// applies the CGI rules. Errors wrap ErrMalformed.
func ParseHeader(block []byte) (Head, error) {
	h := Head{Header: make(http.Header)}
	status := ""
	fields := 0
	for len(block) > 0 {
		var line []byte
		line, block, _ = bytes.Cut(block, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return Head{}, fmt.Errorf("%w: header line %q has no colon", ErrMalformed, clip(line))
		}
		key := string(name)
		if !httpguts.ValidHeaderFieldName(key) {
			return Head{}, fmt.Errorf("%w: bad field name %q", ErrMalformed, clip(name))
		}
		v := strings.Trim(string(value), " \t")
		if !httpguts.ValidHeaderFieldValue(v) {
			return Head{}, fmt.Errorf("%w: bad value for %s", ErrMalformed, key)
		}
		fields++
		key = http.CanonicalHeaderKey(key)
		switch {
		case key == "Status":
			if status != "" {
				return Head{}, fmt.Errorf("%w: more than one Status", ErrMalformed)
			}
			if v == "" {
				return Head{}, fmt.Errorf("%w: empty Status", ErrMalformed)
			}
			status = v
		case hopByHop[key]:
		default:
			h.Header.Add(key, v)
		}
	}
	if fields == 0 {
		return Head{}, fmt.Errorf("%w: no header fields", ErrMalformed)
	}
	if status != "" {
		code, err := parseStatus(status)
		if err != nil {
			return Head{}, err
		}
		h.Status = code
	}
	if loc := h.Header.Values("Location"); len(loc) > 0 {
		if len(loc) > 1 || loc[0] == "" {
			return Head{}, fmt.Errorf("%w: Location must have one non-empty value", ErrMalformed)
		}
		if h.Status == 0 {
			h.Status = http.StatusFound
		}
	}
	if h.Status == 0 {
		h.Status = http.StatusOK
	}
	if cl := h.Header.Values("Content-Length"); len(cl) > 0 {
		if len(cl) > 1 {
			return Head{}, fmt.Errorf("%w: more than one Content-Length", ErrMalformed)
		}
		if n, err := strconv.ParseUint(cl[0], 10, 63); err != nil || strconv.FormatUint(n, 10) != cl[0] {
			return Head{}, fmt.Errorf("%w: bad Content-Length %q", ErrMalformed, clip([]byte(cl[0])))
		}
	}
	if h.Header.Get("Content-Type") == "" {
		h.Header.Set("Content-Type", "text/html")
	}
	return h, nil
}

// parseStatus reads "NNN" or "NNN reason-phrase" into a final status code.
func parseStatus(s string) (int, error) {
	digits, reason, _ := strings.Cut(s, " ")
	code, err := strconv.Atoi(digits)
	if err != nil || len(digits) != 3 || digits[0] == '+' || digits[0] == '-' {
		return 0, fmt.Errorf("%w: Status %q is not a three-digit code", ErrMalformed, clip([]byte(s)))
	}
	if code < 200 {
		return 0, fmt.Errorf("%w: Status %d is not a final status", ErrMalformed, code)
	}
	_ = reason // the reason phrase is the writer's; HTTP/1.1 servers send their own
	return code, nil
}

// clip shortens b for an error message.
func clip(b []byte) string {
	const n = 64
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// Parser finds and parses the header block of output that arrives in
// pieces. The zero value is ready; it is for one goroutine.
type Parser struct {
	buf  []byte
	done bool
}

// Feed adds the next piece of output. Once the header block is whole it
// returns its Head, true, and the bytes of body that followed the block in
// what was fed; later pieces are all body and should not be fed. A block
// longer than MaxHeader is an error.
func (p *Parser) Feed(data []byte) (head Head, body []byte, ok bool, err error) {
	if p.done {
		return Head{}, nil, false, errors.New("cgi: Feed after the header block")
	}
	p.buf = append(p.buf, data...)
	n := HeaderEnd(p.buf)
	if n < 0 {
		if len(p.buf) > MaxHeader {
			return Head{}, nil, false, fmt.Errorf("%w: header block longer than %d bytes", ErrMalformed, MaxHeader)
		}
		return Head{}, nil, false, nil
	}
	if n > MaxHeader {
		return Head{}, nil, false, fmt.Errorf("%w: header block longer than %d bytes", ErrMalformed, MaxHeader)
	}
	p.done = true
	head, err = ParseHeader(p.buf[:n])
	if err != nil {
		return Head{}, nil, false, err
	}
	body = p.buf[n:]
	p.buf = nil
	return head, body, true, nil
}

// End is the error for output that ended before its header block did, or
// nil once the block was found.
func (p *Parser) End() error {
	if p.done {
		return nil
	}
	if len(p.buf) == 0 {
		return fmt.Errorf("%w: no output", ErrMalformed)
	}
	return fmt.Errorf("%w: output ended inside the header block", ErrMalformed)
}

// Writer turns CGI output written to it into a response on an
// http.ResponseWriter: it holds the output back until the header block is
// whole, then writes the head and passes the body through. Output that
// breaks the rules is answered with 502 Bad Gateway. Close must be called
// when the output ends. It is for one goroutine.
type Writer struct {
	w    http.ResponseWriter
	p    Parser
	head bool  // the head was written to w
	err  error // sticky
}

// NewWriter returns a Writer that answers on w.
func NewWriter(w http.ResponseWriter) *Writer { return &Writer{w: w} }

func (cw *Writer) Write(b []byte) (int, error) {
	if cw.err != nil {
		return 0, cw.err
	}
	if cw.head {
		return cw.w.Write(b)
	}
	head, body, ok, err := cw.p.Feed(b)
	if err != nil {
		cw.fail(err)
		return 0, err
	}
	if ok {
		cw.writeHead(head)
		if len(body) > 0 {
			if _, err := cw.w.Write(body); err != nil {
				cw.err = err
				return 0, err
			}
		}
	}
	return len(b), nil
}

// Close ends the output. Output that ended inside its header block is
// answered with 502, and Close returns the error.
func (cw *Writer) Close() error {
	if cw.err != nil || cw.head {
		return cw.err
	}
	err := cw.p.End()
	cw.fail(err)
	return err
}

func (cw *Writer) writeHead(head Head) {
	h := cw.w.Header()
	for k, vs := range head.Header {
		h[k] = vs
	}
	cw.w.WriteHeader(head.Status)
	cw.head = true
}

func (cw *Writer) fail(err error) {
	cw.err = err
	h := cw.w.Header()
	clear(h)
	http.Error(cw.w, "502 Bad Gateway: malformed CGI output", http.StatusBadGateway)
}
