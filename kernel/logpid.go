package kernel

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// pidHandler tags records with a plugin process's pid once it is known. The
// kernel learns the pid when the process has started, after the logger was
// handed to it; handlers derived with WithAttrs and WithGroup share the pid.
type pidHandler struct {
	slog.Handler
	pid *atomic.Int64
}

func newPidHandler(h slog.Handler) *pidHandler {
	return &pidHandler{Handler: h, pid: new(atomic.Int64)}
}

func (h *pidHandler) Handle(ctx context.Context, r slog.Record) error {
	if pid := h.pid.Load(); pid != 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64("pid", pid))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *pidHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &pidHandler{Handler: h.Handler.WithAttrs(as), pid: h.pid}
}

func (h *pidHandler) WithGroup(name string) slog.Handler {
	return &pidHandler{Handler: h.Handler.WithGroup(name), pid: h.pid}
}
