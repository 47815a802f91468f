package testutil

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// LogRecorder is a slog.Handler that keeps every record it gets, at every
// level, for a test to look for. The zero value is ready to use. Handlers
// derived with WithAttrs add their attributes to what they record and share
// the list with the recorder they came from; WithGroup is ignored.
//
// A LogRecorder holds no reference to a test, so it may outlive one: a
// process's log can still arrive after the test ends (go-plugin's stdio
// goroutine logs after Kill).
type LogRecorder struct {
	root  *LogRecorder // the recorder holding the list; nil on the root itself
	attrs []slog.Attr  // added with WithAttrs

	mu      sync.Mutex
	records []Record // guarded by mu; on the root only
}

// Record is a log record flattened for comparison.
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string // each attribute's value as slog.Value.String gives it
}

func (r *LogRecorder) list() *LogRecorder {
	if r.root != nil {
		return r.root
	}
	return r
}

// Enabled reports true: a LogRecorder keeps every level.
func (r *LogRecorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps rec with the attributes added by WithAttrs.
func (r *LogRecorder) Handle(_ context.Context, rec slog.Record) error {
	x := Record{Level: rec.Level, Message: rec.Message, Attrs: make(map[string]string)}
	for _, a := range r.attrs {
		x.Attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		x.Attrs[a.Key] = a.Value.String()
		return true
	})
	l := r.list()
	l.mu.Lock()
	l.records = append(l.records, x)
	l.mu.Unlock()
	return nil
}

// WithAttrs returns a handler that records into the same list with as
// added to every record.
func (r *LogRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	attrs := make([]slog.Attr, 0, len(r.attrs)+len(as))
	return &LogRecorder{root: r.list(), attrs: append(append(attrs, r.attrs...), as...)}
}

// WithGroup returns r: groups are not recorded.
func (r *LogRecorder) WithGroup(string) slog.Handler { return r }

// Find returns the records so far whose message contains msg, in the order
// they were logged; Find("") returns them all.
func (r *LogRecorder) Find(msg string) []Record {
	l := r.list()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for _, x := range l.records {
		if strings.Contains(x.Message, msg) {
			out = append(out, x)
		}
	}
	return out
}
