package host

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A plugin that floods its log (a loop printing, a handler logging every
// byte) must not flood the kernel's: every record a plugin process sends —
// from stderr, stdout, go-plugin's logger or Host.Log — passes one token
// bucket per process. Records over the rate are dropped and counted, and
// the count is logged when records flow again.
const (
	logRate  = 1000 // records per second, sustained
	logBurst = 5000 // records at once
)

// logLimiter is a token bucket. It is safe for concurrent use.
type logLimiter struct {
	now func() time.Time // the clock; nil means time.Now

	mu      sync.Mutex
	tokens  float64   // guarded by mu
	last    time.Time // guarded by mu
	dropped int64     // since the last report; guarded by mu
}

// allow reports whether a record may pass now, and how many were dropped
// since the last record that passed, for the caller to report.
func (l *logLimiter) allow(now time.Time) (ok bool, dropped int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = logBurst
	} else {
		l.tokens = min(logBurst, l.tokens+now.Sub(l.last).Seconds()*logRate)
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

// limitedHandler passes records through a logLimiter shared by all the
// handlers derived from it.
type limitedHandler struct {
	slog.Handler
	lim *logLimiter
}

func newLimitedLogger(log *slog.Logger) *slog.Logger {
	return slog.New(limitedHandler{Handler: log.Handler(), lim: &logLimiter{}})
}

func (h limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	now := time.Now
	if h.lim.now != nil {
		now = h.lim.now
	}
	ok, dropped := h.lim.allow(now())
	if dropped > 0 {
		rec := slog.NewRecord(time.Now(), slog.LevelWarn, "plugin log over its rate limit: records dropped", 0)
		rec.AddAttrs(slog.Int64("dropped", dropped), slog.Int("rate_per_s", logRate), slog.Int("burst", logBurst))
		_ = h.Handler.Handle(ctx, rec)
	}
	if !ok {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h limitedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return limitedHandler{Handler: h.Handler.WithAttrs(as), lim: h.lim}
}

func (h limitedHandler) WithGroup(name string) slog.Handler {
	return limitedHandler{Handler: h.Handler.WithGroup(name), lim: h.lim}
}
