package kernel

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// pidHandler tags records with a plugin process's pid once it is known. The
// kernel learns the pid when the process has started, after the logger was
// handed to it.
type pidHandler struct {
	slog.Handler
	pid atomic.Int64
}

func (h *pidHandler) Handle(ctx context.Context, r slog.Record) error {
	if pid := h.pid.Load(); pid != 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64("pid", pid))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *pidHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &pidView{parent: h, Handler: h.Handler.WithAttrs(as)}
}

func (h *pidHandler) WithGroup(name string) slog.Handler {
	return &pidView{parent: h, Handler: h.Handler.WithGroup(name)}
}

// pidView is a derived handler that reads the pid of the handler it came
// from.
type pidView struct {
	slog.Handler
	parent *pidHandler
}

func (v *pidView) Handle(ctx context.Context, r slog.Record) error {
	if pid := v.parent.pid.Load(); pid != 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64("pid", pid))
	}
	return v.Handler.Handle(ctx, r)
}

func (v *pidView) WithAttrs(as []slog.Attr) slog.Handler {
	return &pidView{parent: v.parent, Handler: v.Handler.WithAttrs(as)}
}

func (v *pidView) WithGroup(name string) slog.Handler {
	return &pidView{parent: v.parent, Handler: v.Handler.WithGroup(name)}
}
