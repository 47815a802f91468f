package config

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// The file* types are the printed form of a Config: the same keys, in the
// same order, with what a reader should not see left out (unset admin and
// state, empty lists, keys that do not apply to a listener's protocol).

type fileConfig struct {
	Admin      *fileAdmin             `toml:"admin,omitempty"`
	State      *fileState             `toml:"state,omitempty"`
	Privileges *Privileges            `toml:"privileges,omitempty"`
	Upgrade    *Upgrade               `toml:"upgrade,omitempty"`
	Metrics    *Metrics               `toml:"metrics,omitempty"`
	Plugins    map[string]*filePlugin `toml:"plugins,omitempty"`
	Listeners  []*fileListener        `toml:"listeners,omitempty"`
	Timers     []*fileTimer           `toml:"timers,omitempty"`
}

type fileAdmin struct {
	Socket string `toml:"socket"`
}

type fileState struct {
	Dir string `toml:"dir"`
}

type filePlugin struct {
	Path         string            `toml:"path"`
	Args         []string          `toml:"args,omitempty"`
	Watch        bool              `toml:"watch"`
	DrainTimeout Duration          `toml:"drain_timeout"`
	CallTimeout  Duration          `toml:"call_timeout"`
	StartTimeout Duration          `toml:"start_timeout"`
	SHA256       string            `toml:"sha256,omitempty"`
	HungCalls    int               `toml:"hung_calls"`
	MaxMemory    int64             `toml:"max_memory"`
	Quarantine   int               `toml:"quarantine_after"`
	Rollback     bool              `toml:"rollback"`
	RollbackWin  Duration          `toml:"rollback_window"`
	Env          map[string]string `toml:"env,omitempty"`
	Settings     map[string]any    `toml:"settings,omitempty"`
}

type fileListener struct {
	Name     string `toml:"name"`
	Protocol string `toml:"protocol"`
	Address  string `toml:"address"`
	Plugin   string `toml:"plugin"`

	MaxConnections    *int      `toml:"max_connections,omitempty"`
	MaxBody           *int64    `toml:"max_body,omitempty"`
	MaxHeaderBytes    *int      `toml:"max_header_bytes,omitempty"`
	ReadHeaderTimeout *Duration `toml:"read_header_timeout,omitempty"`
	ReadTimeout       *Duration `toml:"read_timeout,omitempty"`
	IdleTimeout       *Duration `toml:"idle_timeout,omitempty"`
	Timeout           *Duration `toml:"timeout,omitempty"`
	MaxLine           *int      `toml:"max_line,omitempty"`
	Telnet            *bool     `toml:"telnet,omitempty"`
	UTF8              *bool     `toml:"utf8,omitempty"`
	MaxOutput         *int      `toml:"max_output,omitempty"`
	WriteTimeout      *Duration `toml:"write_timeout,omitempty"`
	MaxInflight       *int      `toml:"max_inflight,omitempty"`
}

type fileTimer struct {
	Name   string   `toml:"name"`
	Every  Duration `toml:"every"`
	Plugin string   `toml:"plugin"`
}

// Marshal renders the effective configuration (defaults applied, paths
// resolved) as TOML, for `serve -print-config`. c must come from Parse; the
// output parses back to an equal Config.
func (c *Config) Marshal() ([]byte, error) {
	var f fileConfig
	if c.Admin.Socket != "" {
		f.Admin = &fileAdmin{Socket: c.Admin.Socket}
	}
	if c.State.Dir != "" {
		f.State = &fileState{Dir: c.State.Dir}
	}
	if c.Privileges != (Privileges{}) {
		f.Privileges = &c.Privileges
	}
	f.Upgrade = &c.Upgrade
	if c.Metrics != (Metrics{}) {
		f.Metrics = &c.Metrics
	}
	if len(c.Plugins) > 0 {
		f.Plugins = make(map[string]*filePlugin, len(c.Plugins))
	}
	for name, p := range c.Plugins {
		f.Plugins[name] = &filePlugin{
			Path:         p.Path,
			Args:         p.Args,
			Env:          p.Env,
			Watch:        p.WatchEnabled(),
			DrainTimeout: p.DrainTimeout,
			CallTimeout:  p.CallTimeout,
			StartTimeout: p.StartTimeout,
			SHA256:       p.SHA256,
			HungCalls:    p.HungCalls,
			MaxMemory:    p.MaxMemory,
			Quarantine:   p.QuarantineAfter,
			Rollback:     p.RollbackEnabled(),
			RollbackWin:  p.RollbackWindow,
			Settings:     p.Settings,
		}
	}
	for _, l := range c.Listeners {
		fl := &fileListener{Name: l.Name, Protocol: l.Protocol, Address: l.Address, Plugin: l.Plugin}
		set(&fl.MaxConnections, "max_connections", l.Protocol, l.MaxConnections)
		set(&fl.MaxBody, "max_body", l.Protocol, l.MaxBody)
		set(&fl.MaxHeaderBytes, "max_header_bytes", l.Protocol, l.MaxHeaderBytes)
		set(&fl.ReadHeaderTimeout, "read_header_timeout", l.Protocol, l.ReadHeaderTimeout)
		set(&fl.ReadTimeout, "read_timeout", l.Protocol, l.ReadTimeout)
		set(&fl.IdleTimeout, "idle_timeout", l.Protocol, l.IdleTimeout)
		set(&fl.Timeout, "timeout", l.Protocol, l.Timeout)
		set(&fl.MaxLine, "max_line", l.Protocol, l.MaxLine)
		set(&fl.Telnet, "telnet", l.Protocol, l.Telnet)
		set(&fl.UTF8, "utf8", l.Protocol, l.UTF8Enabled())
		set(&fl.MaxOutput, "max_output", l.Protocol, l.MaxOutput)
		set(&fl.WriteTimeout, "write_timeout", l.Protocol, l.WriteTimeout)
		set(&fl.MaxInflight, "max_inflight", l.Protocol, l.MaxInflight)
		f.Listeners = append(f.Listeners, fl)
	}
	for _, t := range c.Timers {
		f.Timers = append(f.Timers, &fileTimer{Name: t.Name, Every: t.Every, Plugin: t.Plugin})
	}

	body, err := toml.Marshal(&f)
	if err != nil {
		return nil, fmt.Errorf("config: marshal %s: %w", c.Source, err)
	}
	var b bytes.Buffer
	b.WriteString("# Effective switchyard configuration: defaults applied, relative paths resolved.\n")
	fmt.Fprintf(&b, "# Source: %s\n", oneLine(c.Source))
	fmt.Fprintf(&b, "# Relative paths were resolved against: %s\n\n", oneLine(c.Dir))
	b.Write(body)
	return b.Bytes(), nil
}

// set points *dst at v when the listener key applies to protocol.
func set[T any](dst **T, key, protocol string, v T) {
	if applies(key, protocol) {
		*dst = &v
	}
}

// oneLine keeps a name from breaking out of its comment line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
