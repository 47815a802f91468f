package kernel

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/internal/callctx"
	dnsl "github.com/switchyard-dev/switchyard/listeners/dns"
	"github.com/switchyard-dev/switchyard/plugins/host"
)

// route connects a listener to the slot that answers it. A configuration
// reload that points the listener at another plugin swaps the slot
// atomically; the listener's socket and front end stay.
type route struct {
	listener string
	slot     atomic.Pointer[slot]
	latency  prometheus.Histogram // set before the front end starts (metrics.go)
}

func newRoute(listener string, s *slot) *route {
	r := &route{listener: listener}
	r.slot.Store(s)
	return r
}

// DispatchDNS implements listeners/dns.Dispatcher.
func (rt *route) DispatchDNS(ctx context.Context, q dnsl.Query) ([]byte, error) {
	s := rt.slot.Load()
	defer rt.observe(s, callDNS, time.Now())
	return s.serveDNS(ctx, q, rt.listener)
}

// Dispatch implements listeners/http.Dispatcher.
func (rt *route) Dispatch(w http.ResponseWriter, r *http.Request) error {
	s := rt.slot.Load()
	defer rt.observe(s, callHTTP, time.Now())
	return s.serveHTTP(w, r, rt.listener)
}

// maxAttempts bounds how often a call that never reached a plugin is retried
// on the next instance (after a crash or a swap raced with it).
const maxAttempts = 3

// httpCall is what serveHTTP makes for a call.
type httpCall struct {
	ctx callctx.Ctx
	sw  statusWriter
}

// serveHTTP answers r with the slot's current instance.
func (s *slot) serveHTTP(w http.ResponseWriter, r *http.Request, listener string) error {
	cfg, _ := s.config()
	// The call's context has the call timeout but is not a child of the
	// request's: registering a child context with every request's would
	// cost an allocation or three per call. The host and acquire watch
	// the request's context themselves, for a client that goes away. It
	// is a callctx.Ctx, whose deadline the host's calls stream keeps on
	// one timer for all its calls, rather than one timer per call.
	// It and the status writer are one allocation.
	call := &httpCall{sw: statusWriter{ResponseWriter: w}}
	ctx, sw := &call.ctx, &call.sw
	ctx.Init(context.WithoutCancel(r.Context()), cfg.CallTimeout.D())
	defer ctx.Cancel(context.Canceled)
	err := s.withInstance(ctx, r.Context().Done(), func(in *instance) (bool, error) {
		err := in.proc.ServeHTTP(ctx, sw, r, listener)
		// A 5xx the plugin answered itself counts against its version,
		// for rollback; the kernel's own error answers come below.
		return sw.code >= 500, err
	})
	if err == nil {
		s.served.Add(1)
		return nil
	}
	var waited acquireError
	if errors.As(err, &waited) && r.Context().Err() != nil {
		return nil // the client went away while we waited
	}
	s.errs.Add(1)
	if errors.Is(err, host.ErrAborted) {
		s.callLog.Warn("response cut off", "listener", listener, "uri", r.RequestURI, "error", err)
		panic(http.ErrAbortHandler)
	}
	code := host.StatusFor(err)
	switch {
	case errors.Is(err, ErrNoInstance), errors.Is(err, ErrStopped):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	s.callLog.Warn("call failed", "listener", listener, "method", r.Method, "uri", r.RequestURI, "status", code,
		"error", err, "call_timeout", cfg.CallTimeout.D())
	h := w.Header()
	clear(h)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d %s: plugin %s: %s\n", code, http.StatusText(code), s.name, publicReason(err))
	return err
}

// publicReason says what went wrong without the internals of the error.
func publicReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer in time"
	case errors.Is(err, ErrNoInstance), errors.Is(err, ErrStopped), errors.Is(err, host.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, host.ErrBadRequest):
		return "could not read the request"
	default:
		return "failed"
	}
}

// acquireError is an error from waiting for an instance, as opposed to one
// from the call.
type acquireError struct{ error }

func (e acquireError) Unwrap() error { return e.error }

// statusWriter records the status code of the answer written through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withInstance runs f on the slot's current instance; f reports whether
// the answer, though it came, was a failure of the plugin's (an HTTP 5xx,
// a DNS SERVFAIL). A call that could not be sent because the instance had
// just died is sent again to its replacement, so a crash costs only the
// calls the dead process held. Each call's outcome is counted on the
// instance that had it (settle). Errors from waiting for an instance come
// as acquireError. gone, when not nil, ends a wait for an instance: the
// client went away.
func (s *slot) withInstance(ctx context.Context, gone <-chan struct{}, f func(*instance) (bad bool, err error)) error {
	var err error
	for range maxAttempts {
		in, aerr := s.acquire(ctx, gone)
		if aerr != nil {
			return acquireError{aerr}
		}
		var bad bool
		bad, err = f(in)
		in.release()
		if !errors.Is(err, host.ErrNotSent) {
			s.settle(ctx, in, bad, err)
			return err
		}
		// One broken stream is no reason to kill the process and the
		// calls on its other streams; no usable stream at all is.
		if !in.proc.Usable() {
			s.lost(in, err)
		}
	}
	return err
}

// serveDNS answers a DNS query with the slot's current instance and returns
// the answer in wire format; the listener checks it.
func (s *slot) serveDNS(ctx context.Context, q dnsl.Query, listener string) ([]byte, error) {
	cfg, _ := s.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout.D())
	defer cancel()
	hq := host.DNSQuery{Msg: q.Msg, Transport: q.Transport, Listener: listener}
	if q.Remote != nil {
		hq.RemoteAddr = q.Remote.String()
	}
	if q.Local != nil {
		hq.LocalAddr = q.Local.String()
	}
	var answer []byte
	err := s.withInstance(ctx, nil, func(in *instance) (bool, error) {
		var err error
		answer, err = in.proc.ServeDNS(ctx, hq)
		// A SERVFAIL the plugin answered itself counts against it.
		return len(answer) >= 4 && answer[3]&0x0f == 2, err
	})
	if err != nil {
		s.errs.Add(1)
		s.callLog.Warn("dns call failed", "listener", listener, "remote", hq.RemoteAddr, "transport", q.Transport,
			"error", err, "call_timeout", cfg.CallTimeout.D())
		return nil, err
	}
	s.served.Add(1)
	return answer, nil
}
