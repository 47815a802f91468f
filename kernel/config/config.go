package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// defaultTOML is the configuration used when serve is given no -config.
//
//go:embed default.toml
var defaultTOML []byte

// DefaultSource is the Source of the Config returned by Default.
const DefaultSource = "embedded default"

// Config is the kernel's whole configuration. Parse fills every field the
// kernel reads, so a Config that Parse returned needs no further defaulting.
type Config struct {
	Admin      Admin              `toml:"admin"`
	State      State              `toml:"state"`
	Privileges Privileges         `toml:"privileges"`
	Upgrade    Upgrade            `toml:"upgrade"`
	Metrics    Metrics            `toml:"metrics"`
	Plugins    map[string]*Plugin `toml:"plugins"` // never nil after Parse
	Listeners  []*Listener        `toml:"listeners"`
	Timers     []*Timer           `toml:"timers"`

	Source string `toml:"-"` // the name given to Parse ("" never)
	Dir    string `toml:"-"` // the absolute base dir used for relative paths
}

// Admin configures the admin socket.
type Admin struct {
	Socket string `toml:"socket"` // "" = let the kernel choose; else absolute
}

// State configures the durable store.
type State struct {
	Dir string `toml:"dir"` // "" = let the kernel choose; else absolute
}

// Privileges say whom the kernel runs as once it has bound its sockets.
type Privileges struct {
	// User is the user a kernel started as root becomes after binding its
	// listeners and before starting any plugin; its plugins run as it too.
	// "" keeps the user the kernel was started as.
	User string `toml:"user"`
	// Group is the group to take; "" means User's primary group.
	Group string `toml:"group"`
}

// Upgrade configures the kernel's replacement of its own process.
type Upgrade struct {
	// Timeout bounds the new kernel's start, up to its report that it
	// serves; past it the new kernel is stopped and the old carries on
	// (default 30s).
	Timeout Duration `toml:"timeout"`
}

// Metrics configures the Prometheus endpoint, /metrics over HTTP.
type Metrics struct {
	// Address is the host:port it listens on (port 0: any free port);
	// "" serves no metrics.
	Address string `toml:"address"`
}

// Plugin is one plugin slot: the executable to run and how to treat it.
type Plugin struct {
	Name         string            `toml:"-"`             // the table key, filled by Parse
	Path         string            `toml:"path"`          // required; absolute after Parse
	Args         []string          `toml:"args"`          // nil when empty
	Env          map[string]string `toml:"env"`           // extra environment for the process; nil when empty
	Watch        *bool             `toml:"watch"`         // default true; read it with WatchEnabled
	DrainTimeout Duration          `toml:"drain_timeout"` // default 30s
	CallTimeout  Duration          `toml:"call_timeout"`  // default 10s
	StartTimeout Duration          `toml:"start_timeout"` // default 5s: exec to handshake done
	// SHA256 pins the executable: one whose content hash differs is
	// refused and the running version keeps serving. "" pins nothing.
	SHA256 string `toml:"sha256"`
	// HungCalls: a process whose calls time out this many times in a row,
	// with no call answered in between, is restarted (default 8).
	HungCalls int `toml:"hung_calls"`
	// MaxMemory: a process whose resident memory passes this many bytes
	// is replaced by a fresh one of the same executable, gracefully
	// (default 1 GiB).
	MaxMemory int64 `toml:"max_memory"`
	// QuarantineAfter: an executable whose processes die this many times
	// in a row, each within 10 s of starting, is not restarted again until
	// its file changes or `ctl reload` forces it (default 5).
	QuarantineAfter int `toml:"quarantine_after"`
	// Rollback swaps back to the previous executable when a new one
	// answers clearly worse than it did within RollbackWindow of a swap
	// (default true, 30s).
	Rollback       *bool    `toml:"rollback"`
	RollbackWindow Duration `toml:"rollback_window"`
	// Settings is opaque to the kernel and handed to the plugin's Configure
	// as JSON. Parse turns TOML dates and times into RFC 3339 strings, so the
	// map holds only string, int64, float64, bool, []any and map[string]any
	// values. Never nil after Parse.
	Settings map[string]any `toml:"settings"`
}

// Listener is one listening socket and the plugin that answers on it.
// Fields that do not apply to the listener's protocol hold their defaults;
// setting one explicitly is an error.
type Listener struct {
	Name     string `toml:"name"`
	Protocol string `toml:"protocol"` // http | scgi | dns | line
	Address  string `toml:"address"`  // host:port, or unix:/absolute/path after Parse (stream protocols only)
	Plugin   string `toml:"plugin"`

	// http, scgi, line, and dns over TCP: connections open at once beyond
	// which new ones are closed at once (default 10000).
	MaxConnections int `toml:"max_connections"`

	// http and scgi
	MaxBody           int64    `toml:"max_body"`            // bytes, default 10 MiB
	MaxHeaderBytes    int      `toml:"max_header_bytes"`    // bytes, default 1 MiB
	ReadHeaderTimeout Duration `toml:"read_header_timeout"` // default 10s
	ReadTimeout       Duration `toml:"read_timeout"`        // whole request incl. body, default 60s
	IdleTimeout       Duration `toml:"idle_timeout"`        // http: keep-alive idle, default 120s; line: no input, default 5m; dns: TCP without a query, default 10s

	// scgi
	Timeout Duration `toml:"timeout"` // per-connection, default 30s

	// line
	MaxLine      int      `toml:"max_line"`      // bytes, default 4096
	Telnet       bool     `toml:"telnet"`        // strip and answer telnet IAC negotiation
	UTF8         *bool    `toml:"utf8"`          // default true; read it with UTF8Enabled
	MaxOutput    int      `toml:"max_output"`    // bytes of unsent output before a slow client is dropped, default 1 MiB
	WriteTimeout Duration `toml:"write_timeout"` // line: one write to the client, default 30s; http: the whole response, default 60s

	// dns
	MaxInflight int `toml:"max_inflight"` // queries answered at once; more get SERVFAIL at once (default 1024)
}

// Timer calls a plugin's Tick on a schedule.
type Timer struct {
	Name   string   `toml:"name"`
	Every  Duration `toml:"every"` // required
	Plugin string   `toml:"plugin"`
}

// Load reads and decodes the file at path. Relative paths inside it resolve
// against the file's directory. Errors name the file as path was given.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path, filepath.Dir(abs))
}

// Default returns the embedded default configuration, with relative paths
// resolved against execDir (the directory of the running executable).
func Default(execDir string) (*Config, error) {
	return Parse(defaultTOML, DefaultSource, execDir)
}

// Parse decodes data strictly, applies defaults, resolves relative paths
// against baseDir and validates the result. name is used in error messages
// and as Source ("config" when empty); baseDir "" means the current
// directory, and a relative baseDir is made absolute.
//
// The error, if any, lists every problem found, one per line, each as
// "name:line:column: message" when its place in data is known. Problems in
// the document's shape (syntax, unknown keys, wrong types) are reported
// before, and instead of, validation problems.
func Parse(data []byte, name, baseDir string) (*Config, error) {
	if name == "" {
		name = "config"
	}
	if baseDir == "" {
		baseDir = "."
	}
	dir, err := filepath.Abs(baseDir)
	if err != nil {
		return nil, fmt.Errorf("%s: base directory: %w", name, err)
	}

	// A schema pass over the syntax tree finds unknown keys and type errors
	// with their positions, all of them at once, and records where every key
	// is, so that validation can point at lines and tell a key set to zero
	// from a key left out.
	s := newScanner(data, name)
	if err := s.run(); err != nil {
		return nil, err
	}

	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, s.decodeError(err)
	}
	c.Source = name
	c.Dir = dir

	k := checker{c: &c, idx: &s.index, source: name}
	k.check()
	if err := k.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// RollbackEnabled reports whether a bad swap is rolled back.
func (p *Plugin) RollbackEnabled() bool { return p.Rollback == nil || *p.Rollback }

// WatchEnabled reports whether the slot swaps when its executable changes.
func (p *Plugin) WatchEnabled() bool { return p.Watch == nil || *p.Watch }

// SameProcess reports whether p and q describe the same process: equal path,
// args, env and settings. A change to any of them needs a new process;
// timeouts and watch may differ.
func (p *Plugin) SameProcess(q *Plugin) bool {
	if p == nil || q == nil {
		return p == q
	}
	return p.Path == q.Path &&
		p.SHA256 == q.SHA256 &&
		slices.Equal(p.Args, q.Args) &&
		maps.Equal(p.Env, q.Env) &&
		(len(p.Settings) == 0 && len(q.Settings) == 0 || reflect.DeepEqual(p.Settings, q.Settings))
}

// UTF8Enabled reports whether a line listener decodes its input as UTF-8.
func (l *Listener) UTF8Enabled() bool { return l.UTF8 == nil || *l.UTF8 }

// Network returns "unix" for unix: addresses, else "tcp".
func (l *Listener) Network() string {
	if strings.HasPrefix(l.Address, unixPrefix) {
		return "unix"
	}
	return "tcp"
}

// RuntimeVar begins a unix: listener address that lives in the kernel's
// runtime directory ($XDG_RUNTIME_DIR/switchyard, or /tmp/switchyard-UID):
// "unix:$RUNTIME/scgi.sock".
const RuntimeVar = "$RUNTIME"

// ExpandRuntime puts the unix: listener addresses that begin with RuntimeVar
// in dir. The kernel calls it once it knows its runtime directory.
func (c *Config) ExpandRuntime(dir string) error {
	var errs []error
	for _, l := range c.Listeners {
		rest, ok := strings.CutPrefix(l.Address, unixPrefix+RuntimeVar+"/")
		if !ok {
			continue
		}
		path := filepath.Join(dir, rest)
		if len(path) > maxUnixPath {
			errs = append(errs, fmt.Errorf("%s: listener %q: address %q: path is %d bytes, longer than a UNIX socket allows (%d)",
				c.Source, l.Name, unixPrefix+path, len(path), maxUnixPath))
			continue
		}
		l.Address = unixPrefix + path
	}
	return errors.Join(errs...)
}

// SocketAddress returns the path after "unix:", or host:port.
func (l *Listener) SocketAddress() string {
	return strings.TrimPrefix(l.Address, unixPrefix)
}

// posError is one problem, placed in its source when pos is known.
type posError struct {
	source string
	pos    position
	msg    string
}

func (e *posError) Error() string {
	if e.pos.line == 0 {
		return e.source + ": " + e.msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.source, e.pos.line, e.pos.col, e.msg)
}

// joinSorted orders errs by position (unplaced ones last, keeping their
// order) and joins them, one per line.
func joinSorted(errs []*posError) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *posError) int {
		switch {
		case a.pos.line == 0 && b.pos.line == 0:
			return 0
		case a.pos.line == 0:
			return 1
		case b.pos.line == 0:
			return -1
		case a.pos.line != b.pos.line:
			return a.pos.line - b.pos.line
		}
		return a.pos.col - b.pos.col
	})
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}
