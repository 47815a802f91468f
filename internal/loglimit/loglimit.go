// Package loglimit passes log records through a token bucket: a flood of
// records (a plugin printing in a loop, a failure logged per request at
// tens of thousands of requests a second) must not flood the kernel's log.
// Records over the rate are dropped and counted, and the count is logged
// when records flow again.
package loglimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter is a token bucket of records. It is safe for concurrent use.
type Limiter struct {
	rate, burst float64
	now         func() time.Time // the clock; nil means time.Now

	mu      sync.Mutex
	tokens  float64   // guarded by mu
	last    time.Time // guarded by mu
	dropped int64     // since the last report; guarded by mu
}

// New returns a Limiter passing rate records a second, sustained, and
// burst at once.
func New(rate, burst int) *Limiter {
	return &Limiter{rate: float64(rate), burst: float64(burst)}
}

// allow reports whether a record may pass now, and how many were dropped
// since the last record that passed, for the caller to report.
func (l *Limiter) allow(now time.Time) (ok bool, dropped int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = l.burst
	} else {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false, 0
	}
	l.tokens--
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}

// Logger returns a logger whose records pass through l before reaching
// log's handler; report is the message of the warning that counts the
// records dropped. Loggers derived from it (With, WithGroup) share l.
func Logger(log *slog.Logger, l *Limiter, report string) *slog.Logger {
	return slog.New(handler{Handler: log.Handler(), lim: l, report: report})
}

type handler struct {
	slog.Handler
	lim    *Limiter
	report string
}

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	now := time.Now
	if h.lim.now != nil {
		now = h.lim.now
	}
	ok, dropped := h.lim.allow(now())
	if dropped > 0 {
		rec := slog.NewRecord(time.Now(), slog.LevelWarn, h.report, 0)
		rec.AddAttrs(slog.Int64("dropped", dropped), slog.Float64("rate_per_s", h.lim.rate), slog.Float64("burst", h.lim.burst))
		_ = h.Handler.Handle(ctx, rec)
	}
	if !ok {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	return handler{Handler: h.Handler.WithAttrs(as), lim: h.lim, report: h.report}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{Handler: h.Handler.WithGroup(name), lim: h.lim, report: h.report}
}
