package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/cgiout"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

const (
	// inlineBody is the largest request body sent with the request's first
	// frame; larger or chunked bodies follow in Body frames.
	inlineBody = 64 << 10
	// bodyChunk is the size of the Body frames of a streamed request body.
	bodyChunk = 32 << 10
	// responseCredit is how many bytes of response body a plugin may have
	// in flight per call before the kernel has written them to the client.
	responseCredit = 256 << 10
)

// StatusFor maps an error from ServeHTTP to the status the client gets. It
// is meaningless for ErrAborted, whose head is already out.
func StatusFor(err error) int {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	default:
		return http.StatusBadGateway
	}
}

// localAddrs holds the text of the local addresses of the kernel's client
// connections, which are few: a listener's connections share one, unless
// it listens on every address of the host. Formatting one
// (net.TCPAddr.String) takes three allocations.
var localAddrs struct {
	mu sync.RWMutex
	m  map[netip.AddrPort]string // at most maxLocalAddrs
}

const maxLocalAddrs = 256

// addrString is a.String(), formatted once for each local address.
func addrString(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	key := t.AddrPort()
	localAddrs.mu.RLock()
	s, ok := localAddrs.m[key]
	localAddrs.mu.RUnlock()
	if ok {
		return s
	}
	s = t.String()
	localAddrs.mu.Lock()
	if localAddrs.m == nil {
		localAddrs.m = make(map[netip.AddrPort]string)
	}
	if len(localAddrs.m) < maxLocalAddrs {
		localAddrs.m[key] = s
	}
	localAddrs.mu.Unlock()
	return s
}

// firstHTTP is the first frame of an HTTP call, in one allocation.
type firstHTTP struct {
	call  proto.Call
	frame proto.Call_Http
	req   proto.HTTPRequest
}

// ServeHTTP sends r to the plugin as a call on listener and relays its
// answer to w. ctx bounds the call and carries its deadline to the plugin.
// A *callctx.Ctx's deadline is kept by the calls stream, on one timer for
// all its calls; such a ctx ends the call only at its deadline, not when it
// is cancelled.
// The call also ends, and is cancelled in the plugin, when r's context ends
// (the client went away), so ctx need not be a child of r.Context(): the
// kernel makes it a sibling, which spares it registering a child context
// with every request.
//
// On success, and when the client went away, it returns nil. Otherwise it
// returns an error and has written nothing to w — except for an error
// wrapping ErrAborted, whose head was sent before the plugin failed; the
// caller then aborts the connection. An error wrapping ErrNotSent leaves r as
// it was (a body read whole to go with the first frame is put back in
// r.Body), so the caller may send r again to another instance.
//
// While the plugin reads a streamed request body, ServeHTTP reads r.Body in a
// goroutine; before it returns it stops that read with the read deadline of
// w's connection (http.ResponseController.SetReadDeadline), so w should
// support it.
func (c *Client) ServeHTTP(ctx context.Context, w http.ResponseWriter, r *http.Request, listener string) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	s, err := c.pick()
	if err != nil {
		return err
	}
	m := new(firstHTTP)
	req := &m.req
	*req = proto.HTTPRequest{
		Method:           r.Method,
		Uri:              r.RequestURI,
		Proto:            r.Proto,
		Host:             r.Host,
		Headers:          proto.FromHTTPHeader(r.Header),
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
		RemoteAddr:       r.RemoteAddr,
		Listener:         listener,
		Tls:              r.TLS != nil,
		Credit:           responseCredit,
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		req.LocalAddr = addrString(a)
	}
	if req.Uri == "" {
		req.Uri = r.URL.RequestURI()
	}
	stream := false
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		req.BodyEnd = true
	case r.ContentLength > 0 && r.ContentLength <= inlineBody:
		req.Body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, req.Body); err != nil {
			return fmt.Errorf("%w: reading body: %w", ErrBadRequest, err)
		}
		req.BodyEnd = true
		// A call that is not sent may be sent again, body and all.
		r.Body = replayBody{bytes.NewReader(req.Body), r.Body}
	default:
		stream = true
	}
	m.frame.Http = req
	first := &m.call
	first.Frame = &m.frame
	if d, ok := ctx.Deadline(); ok {
		first.TimeoutNs = max(int64(time.Until(d)), 1)
	}
	p, err := s.start(ctx, first)
	if err != nil {
		return err
	}
	if stream {
		// The plugin may answer while it still reads the body (a streaming
		// echo); HTTP/1.1's net/http would otherwise close the body at the
		// first write of the answer.
		_ = http.NewResponseController(w).EnableFullDuplex()
		pumpCtx, stopPump := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			pumpBody(pumpCtx, p, r.Body)
		}()
		defer func() {
			stopPump()
			select {
			case <-done:
			default:
				// The call ended before the client sent its whole body;
				// unblock the read so the pump can exit before we return,
				// since net/http forbids touching the body after that.
				_ = http.NewResponseController(w).SetReadDeadline(time.Now())
				<-done
			}
		}()
	}
	return relayHTTP(ctx, w, r, p)
}

// replayBody is a request body read whole into memory, keeping the original
// to close.
type replayBody struct {
	*bytes.Reader
	orig io.Closer
}

func (b replayBody) Close() error { return b.orig.Close() }

// pumpBody sends a request body in frames until it ends or fails, or ctx
// is done.
func pumpBody(ctx context.Context, p *pending, body io.Reader) {
	for {
		buf := make([]byte, bodyChunk)
		n, err := body.Read(buf)
		if n > 0 {
			if p.body(ctx, &proto.Body{Data: buf[:n]}) != nil {
				return
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			_ = p.body(ctx, &proto.Body{End: true})
			return
		case err != nil:
			_ = p.body(ctx, &proto.Body{End: true, Error: err.Error()})
			return
		}
	}
}

// relayHTTP writes the plugin's answer for p to w. Whenever it returns
// before the plugin ended the call, it cancels the call in the plugin —
// except when ctx's deadline passed, which the plugin enforces itself.
func relayHTTP(ctx context.Context, w http.ResponseWriter, r *http.Request, p *pending) error {
	headSent := false
	cancelReason := "kernel gave up on the call"
	defer func() {
		// Both are no-ops for a call that ended with its final frame.
		if cancelReason == "" {
			p.stream.forget(p.id)
			return
		}
		p.cancel(cancelReason)
	}()
	// abort is the error for a call that cannot go on.
	abort := func(err error) error {
		if headSent {
			return fmt.Errorf("%w: %w", ErrAborted, err)
		}
		return err
	}
	unacked := 0           // body bytes written but not yet credited back
	gotHead := false       // the plugin's head frame arrived
	var cgi *cgiout.Parser // non-nil while CGI output's header block is awaited
	// writeHead sends the response head to w; end says the body is data
	// and nothing more.
	writeHead := func(code int, data []byte, end bool, trailers []*proto.Header) {
		header := w.Header()
		if end && len(trailers) == 0 && bodyAllowed(code) &&
			(r.Method != http.MethodHead || len(data) > 0) &&
			header.Get("Content-Length") == "" && header.Get("Transfer-Encoding") == "" {
			header.Set("Content-Length", strconv.Itoa(len(data)))
		}
		w.WriteHeader(code)
		headSent = true
	}
	gone := r.Context().Done()
	for {
		f, err := p.nextOr(ctx, gone)
		if err != nil {
			if ctx.Err() != nil || r.Context().Err() != nil {
				switch {
				case errors.Is(ctx.Err(), context.DeadlineExceeded):
					// The plugin has the same deadline and ends the call
					// itself, with a context that says why.
					cancelReason = ""
				case r.Context().Err() != nil:
					cancelReason = "client gone"
				default:
					cancelReason = err.Error()
				}
				if r.Context().Err() != nil {
					// The client went away; nobody is left to answer.
					return nil
				}
			}
			return abort(err)
		}
		var (
			data     []byte
			end      bool
			flush    bool
			trailers []*proto.Header
		)
		switch fr := f.GetFrame().(type) {
		case *proto.Reply_Http:
			if gotHead {
				cancelReason = "second response head"
				return abort(fmt.Errorf("%w: second response head", ErrProtocol))
			}
			gotHead = true
			h := fr.Http
			data, end, flush, trailers = h.GetBody(), h.GetEnd(), h.GetFlush(), h.GetTrailers()
			if h.GetCgi() {
				cgi = new(cgiout.Parser)
				break
			}
			code := int(h.GetStatus())
			if code < 200 || code > 999 {
				cancelReason = "invalid status"
				return fmt.Errorf("%w: invalid status %d", ErrProtocol, code)
			}
			header := w.Header()
			for _, kv := range h.GetHeaders() {
				header[kv.GetName()] = kv.GetValues()
			}
			writeHead(code, data, end, trailers)
		case *proto.Reply_Body:
			if !gotHead {
				cancelReason = "body before head"
				return fmt.Errorf("%w: body before head", ErrProtocol)
			}
			b := fr.Body
			data, end, flush, trailers = b.GetData(), b.GetEnd(), b.GetFlush(), b.GetTrailers()
		case *proto.Reply_Failure:
			return abort(fmt.Errorf("%w: %s", ErrFailed, fr.Failure.GetMessage()))
		default:
			cancelReason = "unknown reply frame"
			return abort(fmt.Errorf("%w: unknown reply frame", ErrProtocol))
		}
		credited := len(data)
		if cgi != nil {
			// CGI output: the head is the first lines of the body.
			head, body, ok, err := cgi.Feed(data)
			if err == nil && !ok && end {
				err = cgi.End()
			}
			if err != nil {
				if !end {
					cancelReason = "malformed CGI output"
				} else {
					cancelReason = ""
				}
				return fmt.Errorf("%w: %w", ErrFailed, err)
			}
			if !ok {
				data = nil
			} else {
				cgi = nil
				header := w.Header()
				for k, vs := range head.Header {
					header[k] = vs
				}
				data = body
				writeHead(head.Status, data, end, trailers)
			}
		}
		if len(data) > 0 {
			if _, err := w.Write(data); err != nil {
				// The client went away mid-answer.
				cancelReason = "client gone"
				return nil
			}
		}
		if end {
			for _, kv := range trailers {
				for _, v := range kv.GetValues() {
					w.Header().Add(http.TrailerPrefix+kv.GetName(), v)
				}
			}
			return nil
		}
		if flush && headSent {
			_ = http.NewResponseController(w).Flush()
		}
		if unacked += credited; unacked >= responseCredit/2 {
			if err := p.credit(ctx, unacked); err != nil {
				if ctx.Err() != nil {
					continue // next reports it
				}
				return abort(fmt.Errorf("%w: %v", ErrUnavailable, err))
			}
			unacked = 0
		}
	}
}

// bodyAllowed reports whether a response with status code may carry a body.
func bodyAllowed(code int) bool {
	return code != http.StatusNoContent && code != http.StatusNotModified && (code < 100 || code > 199)
}
