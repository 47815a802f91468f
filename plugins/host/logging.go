package host

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// lineLogger turns a plugin's raw output (stderr, or stdout after the
// handshake) into log records, one per line. Lines that go-plugin's JSON
// logger wrote keep their level and fields; a Go panic or fatal error and
// everything after it is logged at Error.
type lineLogger struct {
	log    *slog.Logger
	stream string

	mu      sync.Mutex
	buf     []byte // partial line; guarded by mu
	inPanic bool   // guarded by mu
}

// maxLogLine bounds a buffered partial line; longer lines are split.
const maxLogLine = 64 << 10

func newLineLogger(log *slog.Logger, stream string) *lineLogger {
	return &lineLogger{log: log, stream: stream}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) >= maxLogLine {
				l.emitLocked(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emitLocked(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) emitLocked(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return
	}
	if line[0] == '{' {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			if msg, ok := m["@message"].(string); ok {
				l.emitJSON(msg, m)
				return
			}
		}
	}
	s := string(line)
	level := slog.LevelInfo
	if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
		l.inPanic = true
	}
	if l.inPanic {
		level = slog.LevelError
	}
	l.log.Log(context.Background(), level, s, slog.String("stream", l.stream))
}

func (l *lineLogger) emitJSON(msg string, m map[string]any) {
	level := slog.LevelInfo
	if s, ok := m["@level"].(string); ok {
		level = slogLevel(hclog.LevelFromString(s))
	}
	attrs := []slog.Attr{slog.String("stream", l.stream)}
	for k, v := range m {
		if strings.HasPrefix(k, "@") {
			if k == "@module" {
				attrs = append(attrs, slog.Any("module", v))
			}
			continue
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	l.log.LogAttrs(context.Background(), level, msg, attrs...)
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// hcLogger adapts the kernel's slog logger to the hclog.Logger go-plugin
// wants. The sub-logger go-plugin names after the executable is silenced:
// the same lines reach the lineLogger on Client.Stderr, raw, where panics and
// plain lines are not demoted to Debug.
type hcLogger struct {
	log     *slog.Logger
	name    string
	silent  string // the Named() name to silence
	off     bool
	implied []any
}

var _ hclog.Logger = (*hcLogger)(nil)

func newHCLogger(log *slog.Logger, silent string) *hcLogger {
	return &hcLogger{log: log, silent: silent}
}

// Log writes one of go-plugin's own records. They describe the mechanics
// of a launch, which the kernel reports itself at Info ("plugin started",
// "plugin exited"), so go-plugin's Info records are logged at Debug. Its
// "plugin" key (the executable) is renamed so as not to clash with the
// kernel's "plugin" (the slot).
func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	if h.off || level == hclog.Off || level == hclog.NoLevel {
		return
	}
	all := make([]any, 0, len(h.implied)+len(args)+2)
	for i, a := range append(append([]any{}, h.implied...), args...) {
		if i%2 == 0 && a == "plugin" {
			a = "executable"
		}
		all = append(all, a)
	}
	if h.name != "" {
		all = append(all, "logger", h.name)
	}
	l := slogLevel(level)
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	h.log.Log(context.Background(), l, msg, all...)
}

func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) enabled(l slog.Level) bool {
	return !h.off && h.log.Enabled(context.Background(), l)
}

func (h *hcLogger) IsTrace() bool { return h.enabled(slog.LevelDebug) }
func (h *hcLogger) IsDebug() bool { return h.enabled(slog.LevelDebug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(slog.LevelInfo) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(slog.LevelWarn) }
func (h *hcLogger) IsError() bool { return h.enabled(slog.LevelError) }

func (h *hcLogger) ImpliedArgs() []any { return h.implied }

func (h *hcLogger) With(args ...any) hclog.Logger {
	n := *h
	n.implied = append(append([]any{}, h.implied...), args...)
	return &n
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	n := *h
	if name == h.silent {
		n.off = true
	}
	if h.name != "" {
		name = h.name + "." + name
	}
	n.name = name
	return &n
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	n := *h
	n.name = name
	n.off = name == h.silent
	return &n
}

func (h *hcLogger) SetLevel(hclog.Level) {}

func (h *hcLogger) GetLevel() hclog.Level {
	switch {
	case h.off:
		return hclog.Off
	case h.enabled(slog.LevelDebug):
		return hclog.Debug
	case h.enabled(slog.LevelInfo):
		return hclog.Info
	case h.enabled(slog.LevelWarn):
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hcLogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		h.Info(strings.TrimRight(string(p), "\n"))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// logRecord writes a record a plugin sent through Host.Log.
func logRecord(ctx context.Context, log *slog.Logger, level slog.Level, msg string, t time.Time, attrs []slog.Attr) {
	if !log.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs...)
	_ = log.Handler().Handle(ctx, r)
}
