package sdk

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Host reaches back into the kernel from a plugin. It is safe for concurrent
// use. A Host the kernel has not connected (in a test, or before Configure)
// logs to stderr, which the kernel also forwards into its log.
type Host struct {
	slot       string
	generation uint64
	client     proto.HostClient // nil when not connected
	logger     *slog.Logger
}

// newHost returns a Host whose logger sends records at level and above.
func newHost(slot string, generation uint64, client proto.HostClient, level slog.Level) *Host {
	h := &Host{slot: slot, generation: generation, client: client}
	fallback := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if client == nil {
		h.logger = slog.New(fallback)
	} else {
		h.logger = slog.New(&logHandler{client: client, fallback: fallback, level: level})
	}
	return h
}

// Slot is the plugin's slot name in the kernel's configuration.
func (h *Host) Slot() string { return h.slot }

// Generation is the generation this process serves as.
func (h *Host) Generation() uint64 { return h.generation }

// Logger returns a logger whose records go into the kernel's log, tagged
// with the plugin's slot, generation and pid.
func (h *Host) Logger() *slog.Logger { return h.logger }

type hostKey struct{}

// HostFrom returns the Host of the plugin serving the call whose context is
// ctx (a request's r.Context()). It never returns nil: outside a call it
// returns a Host that logs to stderr.
func HostFrom(ctx context.Context) *Host {
	if h, ok := ctx.Value(hostKey{}).(*Host); ok && h != nil {
		return h
	}
	return newHost("", 0, nil, slog.LevelInfo)
}

// logHandler is a slog.Handler that sends records to the kernel's Host.Log.
type logHandler struct {
	client   proto.HostClient
	fallback slog.Handler
	level    slog.Level
	attrs    []*proto.Attr
	group    string // prefix for attribute keys, "" or "a.b."
}

const logTimeout = 2 * time.Second

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	req := &proto.LogRequest{
		Level:        int32(r.Level),
		Message:      r.Message,
		TimeUnixNano: r.Time.UnixNano(),
		Attrs:        append([]*proto.Attr(nil), h.attrs...),
	}
	r.Attrs(func(a slog.Attr) bool {
		req.Attrs = appendAttr(req.Attrs, h.group, a)
		return true
	})
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), logTimeout)
	defer cancel()
	if _, err := h.client.Log(ctx, req); err != nil {
		// The kernel is unreachable (it is stopping this process, or the
		// connection broke): stderr still reaches its log.
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]*proto.Attr(nil), h.attrs...)
	for _, a := range as {
		n.attrs = appendAttr(n.attrs, h.group, a)
	}
	n.fallback = h.fallback.WithAttrs(as)
	return &n
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.group = h.group + name + "."
	n.fallback = h.fallback.WithGroup(name)
	return &n
}

// appendAttr flattens a (possibly grouped) attribute into key/value strings.
func appendAttr(dst []*proto.Attr, prefix string, a slog.Attr) []*proto.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, g := range v.Group() {
			dst = appendAttr(dst, p, g)
		}
		return dst
	}
	if a.Key == "" {
		return dst
	}
	return append(dst, &proto.Attr{Key: prefix + a.Key, Value: v.String()})
}
