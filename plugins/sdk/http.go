package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// chunkSize is how much response body the SDK buffers before it sends a
// frame. A response that fits is sent whole with its head, in one frame.
const chunkSize = 32 << 10

func (s *callStream) startHTTP(id uint64, timeoutNS int64, m *proto.HTTPRequest) {
	h := s.svc.plugin.HTTP
	if h == nil {
		_ = s.send(failure(id, "plugin serves no HTTP"))
		return
	}
	c := s.begin(id, timeoutNS, m.GetCredit(), !m.GetBodyEnd(), m.GetBody())
	s.wg.Add(1)
	s.workers.Run(func() {
		defer s.wg.Done()
		defer s.end(c)
		s.serveHTTP(c, h, m)
	})
}

func (s *callStream) serveHTTP(c *call, h http.Handler, m *proto.HTTPRequest) {
	req, err := newRequest(c, m)
	if err != nil {
		w := newResponseWriter(s, c, nil)
		http.Error(w, err.Error(), http.StatusBadRequest)
		w.finish()
		return
	}
	w := newResponseWriter(s, c, req)
	switch p := s.runHandler(h, w, req); {
	case p == nil:
		w.finish()
	case p == http.ErrAbortHandler:
		// As in net/http: the client gets no answer, or loses the one it
		// was getting, and nothing is logged.
		_ = s.send(failure(c.id, "handler aborted"))
	case w.headSent:
		// The client has a status already; only cutting the response off
		// tells it something went wrong.
		_ = s.send(failure(c.id, "handler panicked"))
	default:
		w.reset()
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		w.finish()
	}
}

// runHandler calls h and returns what it panicked with, or nil. A panic
// other than http.ErrAbortHandler is logged to the kernel.
func (s *callStream) runHandler(h http.Handler, w http.ResponseWriter, r *http.Request) (panicked any) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
			if p != http.ErrAbortHandler {
				s.svc.logPanic("http "+r.Method+" "+r.URL.Path, p, debug.Stack())
			}
		}
	}()
	h.ServeHTTP(w, r)
	return nil
}

// newRequest rebuilds the client's request as net/http's server would have
// built it.
func newRequest(c *call, m *proto.HTTPRequest) (*http.Request, error) {
	// Built on the stack: WithContext at the end makes the one copy that
	// the handler gets.
	r := http.Request{
		Method:        m.GetMethod(),
		Proto:         m.GetProto(),
		Header:        proto.ToHTTPHeader(m.GetHeaders()),
		ContentLength: m.GetContentLength(),
		Host:          m.GetHost(),
		RemoteAddr:    m.GetRemoteAddr(),
		RequestURI:    m.GetUri(),
	}
	var ok bool
	if r.ProtoMajor, r.ProtoMinor, ok = http.ParseHTTPVersion(r.Proto); !ok {
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	}
	if te := m.GetTransferEncoding(); len(te) > 0 {
		r.TransferEncoding = te
	}
	rawurl := r.RequestURI
	var err error
	if r.Method == http.MethodConnect && !strings.HasPrefix(rawurl, "/") {
		r.URL = &url.URL{Host: rawurl}
	} else if r.URL, err = url.ParseRequestURI(rawurl); err != nil {
		return nil, fmt.Errorf("malformed request URI %q", rawurl)
	}
	if m.GetTls() {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: hostOnly(r.Host)}
	}
	if la := m.GetLocalAddr(); la != "" {
		c.ctx.local = localAddr(la)
	}
	c.ctx.listener = m.GetListener()
	switch {
	case c.body != nil:
		r.Body = c.body
	case len(m.GetBody()) > 0:
		r.Body = newBytesBody(m.GetBody())
	default:
		r.Body = http.NoBody
	}
	return r.WithContext(c.ctx), nil
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// responseWriter sends what a handler writes to the kernel: the head when it
// is known, the body in frames of at most chunkSize within the credit the
// kernel grants, and the end with trailers when the handler returns. Like
// net/http's, it is for the handler's goroutine only.
type responseWriter struct {
	stream *callStream
	call   *call
	header http.Header
	isHEAD bool // the body is counted, not sent
	cgi    bool // the body is CGI output that the kernel parses

	status        int
	wroteHeader   bool            // the status is fixed
	headSent      bool            // the head frame went out
	head          []*proto.Header // the header as it was at WriteHeader
	trailers      []string        // names declared in the Trailer header
	contentLength int64           // declared in the header, or -1
	written       int64           // body bytes accepted from the handler
	buf           []byte
	err           error // sticky: the call is over for the kernel

	// The head frame's messages, sent once: they come with the writer
	// rather than in allocations of their own.
	headReply struct {
		reply proto.Reply
		frame proto.Reply_Http
		head  proto.HTTPResponse
	}
}

var (
	_ http.ResponseWriter = (*responseWriter)(nil)
	_ http.Flusher        = (*responseWriter)(nil)
	_ io.StringWriter     = (*responseWriter)(nil)
)

// newResponseWriter returns the writer for c's answer to req, which is nil
// when the request could not be rebuilt.
func newResponseWriter(s *callStream, c *call, req *http.Request) *responseWriter {
	return &responseWriter{
		stream:        s,
		call:          c,
		header:        make(http.Header),
		isHEAD:        req != nil && req.Method == http.MethodHead,
		contentLength: -1,
	}
}

func (w *responseWriter) Header() http.Header { return w.header }

// startCGI switches a response that has not begun to CGI output: what the
// handler writes goes to the kernel as it is, header block and all, and the
// kernel parses it. It reports false when the response has begun.
func (w *responseWriter) startCGI() bool {
	if w.wroteHeader || w.err != nil {
		return false
	}
	w.cgi = true
	w.isHEAD = false // the head is in the body: the kernel drops the rest
	w.status, w.wroteHeader = http.StatusOK, true
	return true
}

func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader {
		return
	}
	if code >= 100 && code <= 199 {
		// Informational answers (100 Continue, 103 Early Hints) are the
		// kernel's business; the final status follows.
		return
	}
	w.status = code
	w.wroteHeader = true
	// The keys as Header.Values and Get would canonicalize them.
	for _, v := range w.header["Trailer"] {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
			}
		}
	}
	if cl := w.header["Content-Length"]; len(cl) > 0 && cl[0] != "" {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		}
	}
	// The handler may change its header map later (to set trailers); the
	// head keeps what it was now.
	w.head = proto.CopyHTTPHeader(w.header)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if err := w.admit(len(p)); err != nil {
		return 0, err
	}
	if w.isHEAD {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	return len(p), w.sendFull()
}

// WriteString lets io.WriteString skip a conversion.
func (w *responseWriter) WriteString(s string) (int, error) {
	if err := w.admit(len(s)); err != nil {
		return 0, err
	}
	if w.isHEAD {
		return len(s), nil
	}
	w.buf = append(w.buf, s...)
	return len(s), w.sendFull()
}

// admit checks that n more bytes of body may be written, as net/http's
// ResponseWriter does, and counts them.
func (w *responseWriter) admit(n int) error {
	if w.err != nil {
		return w.err
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(n) > w.contentLength {
		return http.ErrContentLength
	}
	w.written += int64(n)
	return nil
}

// sendFull sends the buffered body in full frames.
func (w *responseWriter) sendFull() error {
	for len(w.buf) >= chunkSize {
		if err := w.sendBody(false, false); err != nil {
			return err
		}
	}
	return nil
}

// Flush sends the head and everything written so far, and asks the kernel
// to flush it to the client.
func (w *responseWriter) Flush() {
	if w.err != nil {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	for {
		if err := w.sendBody(true, false); err != nil || len(w.buf) == 0 {
			return
		}
	}
}

// reset forgets a response whose head was not sent, so a panicking handler
// can be answered with a 500 instead.
func (w *responseWriter) reset() {
	w.header = make(http.Header)
	w.status, w.wroteHeader, w.head, w.trailers, w.buf = 0, false, nil, nil, nil
	w.cgi = false
	w.contentLength, w.written = -1, 0
}

// finish ends the response after the handler returned.
func (w *responseWriter) finish() {
	if w.err != nil {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.isHEAD && !w.headSent && w.written > 0 && w.contentLength < 0 &&
		len(w.trailers) == 0 && bodyAllowed(w.status) {
		// What net/http answers to a HEAD whose handler wrote a body it
		// did not flush: the length the GET would have.
		w.head = append(w.head, &proto.Header{Name: "Content-Length", Values: []string{strconv.FormatInt(w.written, 10)}})
	}
	for w.err == nil {
		if err := w.sendBody(false, true); err != nil || (w.headSent && len(w.buf) == 0) {
			return
		}
	}
}

// sendBody sends one frame with as much of buf as the credit allows. With
// last, the frame that empties buf also ends the call. Once the call is over
// for the kernel (it cancelled the call, its deadline passed, the stream
// broke) nothing more is sent and the error sticks.
func (w *responseWriter) sendBody(flush, last bool) error {
	if w.call.ctx.Err() != nil {
		w.err = fmt.Errorf("sdk: call ended: %w", context.Cause(w.call.ctx))
		return w.err
	}
	data := w.buf
	if len(data) > chunkSize {
		data = data[:chunkSize]
	}
	if len(data) > 0 {
		n, err := w.call.take(len(data))
		if err != nil {
			w.err = fmt.Errorf("sdk: call ended: %w", err)
			return w.err
		}
		data = data[:n]
	}
	end := last && len(data) == len(w.buf)
	var trailers []*proto.Header
	if end {
		trailers = w.trailerValues()
	}
	var r *proto.Reply
	if !w.headSent {
		hr := &w.headReply
		head := &hr.head
		head.Status, head.Headers, head.Body = int32(w.status), w.head, data
		head.End, head.Flush, head.Trailers = end, flush, trailers
		if w.cgi {
			head.Status, head.Headers, head.Cgi = 0, nil, true
		}
		hr.frame.Http = head
		r = &hr.reply
		r.Id, r.Frame = w.call.id, &hr.frame
	} else {
		r = &proto.Reply{Id: w.call.id, Frame: &proto.Reply_Body{Body: &proto.Body{
			Data:     data,
			End:      end,
			Flush:    flush,
			Trailers: trailers,
		}}}
	}
	if err := w.stream.send(r); err != nil {
		w.err = fmt.Errorf("sdk: send: %w", err)
		return w.err
	}
	w.headSent = true
	// The frame owns buf[:len(data)] now; later appends land after it.
	w.buf = w.buf[len(data):]
	if len(w.buf) == 0 {
		w.buf = nil
	}
	if end {
		w.err = errCallOver
	}
	return nil
}

var errCallOver = errors.New("sdk: response already finished")

// trailerValues collects the trailers the handler set: names it declared in
// the Trailer header before the head, and names with http.TrailerPrefix.
func (w *responseWriter) trailerValues() []*proto.Header {
	var hs []*proto.Header
	for _, name := range w.trailers {
		if vs := w.header[name]; len(vs) > 0 {
			hs = append(hs, &proto.Header{Name: name, Values: vs})
		}
	}
	for k, vs := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			hs = append(hs, &proto.Header{Name: http.CanonicalHeaderKey(strings.TrimPrefix(k, http.TrailerPrefix)), Values: vs})
		}
	}
	return hs
}

// bodyAllowed reports whether a response with status code may carry a body,
// as net/http decides it.
func bodyAllowed(code int) bool {
	return code != http.StatusNoContent && code != http.StatusNotModified && (code < 100 || code > 199)
}
