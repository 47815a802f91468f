package scgi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// responseWriter writes the answer to an SCGI request as CGI output: a
// Status line, the header, a blank line, then the body, which ends when the
// connection closes. Like net/http's, it is for the handler's goroutine
// only.
type responseWriter struct {
	c       net.Conn
	bw      *bufio.Writer
	timeout time.Duration
	isHEAD  bool

	handler     http.Header // what Header returns
	header      http.Header // handler as it was at WriteHeader: what is sent
	status      int
	wroteHeader bool // the status is fixed
	headSent    bool // the head is in bw (or on the wire)
	cl          int64
	written     int64
	err         error // sticky write error

	userDeadline bool // SetWriteDeadline set a deadline, which Timeout's does not replace
}

var (
	_ http.ResponseWriter = (*responseWriter)(nil)
	_ http.Flusher        = (*responseWriter)(nil)
)

// newResponseWriter returns the writer for the answer to r on c; r is nil
// for a request that could not be read.
func newResponseWriter(c net.Conn, r *http.Request, timeout time.Duration) *responseWriter {
	return &responseWriter{
		c:       c,
		bw:      bufio.NewWriterSize(c, 4<<10),
		timeout: timeout,
		isHEAD:  r != nil && r.Method == http.MethodHead,
		handler: make(http.Header),
		cl:      -1,
	}
}

func (w *responseWriter) Header() http.Header { return w.handler }

func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || (code >= 100 && code <= 199) {
		// 1xx answers have no place in CGI output; the final one follows.
		return
	}
	w.status, w.wroteHeader = code, true
	w.header = w.handler.Clone()
	if v := w.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.cl = n
		} else {
			w.header.Del("Content-Length")
		}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.headSent {
		w.sniff(p)
	}
	if err := w.writeHead(); err != nil {
		return 0, err
	}
	if w.isHEAD {
		return len(p), nil
	}
	w.deadline()
	n, err := w.bw.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// sniff sets the Content-Type of a body starting with p when the handler
// set none, as net/http does: not when the header has the key (even with
// no value), nor for an encoded body.
func (w *responseWriter) sniff(p []byte) {
	if _, ok := w.header["Content-Type"]; ok || len(p) == 0 || w.header.Get("Content-Encoding") != "" {
		return
	}
	w.header.Set("Content-Type", http.DetectContentType(p))
}

// writeHead puts the head into the buffer once.
func (w *responseWriter) writeHead() error {
	if w.err != nil {
		return w.err
	}
	if w.headSent {
		return nil
	}
	w.headSent = true
	w.deadline()
	fmt.Fprintf(w.bw, "Status: %d %s\r\n", w.status, statusText(w.status))
	// CGI output has no trailers.
	drop := map[string]bool{"Trailer": true, "Transfer-Encoding": true, "Connection": true, "Status": true}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			drop[k] = true
		}
	}
	if err := w.header.WriteSubset(w.bw, drop); err != nil {
		w.err = err
		return err
	}
	_, err := w.bw.WriteString("\r\n")
	if err != nil {
		w.err = err
	}
	return err
}

// Flush sends what has been written.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.writeHead(); err != nil {
		return err
	}
	w.deadline()
	if err := w.bw.Flush(); err != nil {
		w.err = err
		return err
	}
	return nil
}

// SetReadDeadline is what http.ResponseController.SetReadDeadline calls:
// the kernel's dispatcher uses it to stop a body read in another goroutine.
func (w *responseWriter) SetReadDeadline(t time.Time) error { return w.c.SetReadDeadline(t) }

// SetWriteDeadline is what http.ResponseController.SetWriteDeadline calls.
// The deadline replaces Timeout's for the writes that follow; the zero time
// gives them Timeout's again.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	w.userDeadline = !t.IsZero()
	return w.c.SetWriteDeadline(t)
}

// EnableFullDuplex is what http.ResponseController.EnableFullDuplex calls:
// an SCGI body may be read while the answer is written.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// deadline gives the next write Timeout to complete.
func (w *responseWriter) deadline() {
	if w.timeout > 0 && !w.userDeadline {
		_ = w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

// error answers with code and a short text, if the head is not out.
func (w *responseWriter) error(code int) {
	if w.headSent {
		return
	}
	clear(w.handler)
	w.header, w.wroteHeader = nil, false
	w.cl, w.written = -1, 0
	text := fmt.Sprintf("%d %s\n", code, statusText(code))
	w.handler.Set("Content-Type", "text/plain; charset=utf-8")
	w.handler.Set("X-Content-Type-Options", "nosniff")
	w.handler.Set("Content-Length", strconv.Itoa(len(text)))
	w.WriteHeader(code)
	io.WriteString(w, text)
}

// finish sends the rest of the answer.
func (w *responseWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.FlushError()
}

// abort cuts the answer off: what is buffered is dropped and the
// connection is reset, so the front server sees a broken response rather
// than a short one that looks complete.
func (w *responseWriter) abort() {
	w.err = http.ErrAbortHandler
	if tc, ok := w.c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	w.c.Close()
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}

// bodyAllowed reports whether a response with status code may carry a body.
func bodyAllowed(code int) bool {
	return code != http.StatusNoContent && code != http.StatusNotModified && (code < 100 || code > 199)
}
