package kernel

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/kernel/admin"
	"github.com/switchyard-dev/switchyard/state"
)

// Handle answers admin commands; it implements admin.Handler.
func (k *Kernel) Handle(ctx context.Context, cmd admin.Command) (any, error) {
	switch cmd.Name {
	case "status":
		return k.Status(), nil
	case "plugins":
		return k.Plugins(), nil
	case "listeners":
		return k.Listeners(), nil
	case "conns":
		listener := ""
		if len(cmd.Args) > 0 {
			listener = cmd.Args[0]
		}
		return k.Conns(listener)
	case "timers":
		return k.Timers(), nil
	case "reload":
		return k.Reload(ctx, cmd.Args[0])
	case "reload-config":
		return k.ReloadConfig(ctx)
	case "shutdown":
		k.Shutdown()
		return "shutting down", nil
	case "upgrade":
		return k.Upgrade(ctx)
	case "log-level":
		return k.setLevel(cmd.Args[0])
	case "state get", "state put", "state del", "state list":
		return k.stateCommand(ctx, cmd)
	default:
		return nil, fmt.Errorf("%s is not supported by this build yet", cmd.Name)
	}
}

// StatusInfo is the answer to `ctl status`.
type StatusInfo struct {
	Version     string         `json:"version"`
	PID         int            `json:"pid"`
	UptimeS     float64        `json:"uptime_s"`
	Listeners   []ListenerInfo `json:"listeners"`
	Plugins     []pluginInfo   `json:"plugins"`
	Timers      []TimerInfo    `json:"timers"`
	Connections int64          `json:"connections"`
	Config      string         `json:"config"`
	State       string         `json:"state"`
	LogLevel    string         `json:"log_level"`
	Metrics     string         `json:"metrics,omitempty"` // the metrics server's bound address
}

// Status reports the kernel's state.
func (k *Kernel) Status() StatusInfo {
	ls := k.Listeners()
	var conns int64
	for _, l := range ls {
		conns += l.Connections
	}
	return StatusInfo{
		Version:     k.opts.Version,
		PID:         os.Getpid(),
		UptimeS:     time.Since(k.started).Round(time.Millisecond).Seconds(),
		Listeners:   ls,
		Plugins:     k.Plugins(),
		Timers:      k.Timers(),
		Connections: conns,
		Config:      k.Config().Source,
		State:       k.stateDir,
		LogLevel:    strings.ToLower(k.level.Level().String()),
		Metrics:     k.MetricsAddress(),
	}
}

// Plugins lists the plugin slots, by name.
func (k *Kernel) Plugins() []pluginInfo {
	k.mu.Lock()
	slots := slices.Collect(maps.Values(k.slots))
	k.mu.Unlock()
	out := make([]pluginInfo, 0, len(slots))
	for _, s := range slots {
		out = append(out, s.info())
	}
	slices.SortFunc(out, func(a, b pluginInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// ListenerInfo is one row of `ctl listeners`.
type ListenerInfo struct {
	Name        string `json:"name"`
	Protocol    string `json:"protocol"`
	Address     string `json:"address"`
	Bound       string `json:"bound"`
	Plugin      string `json:"plugin"`
	Connections int64  `json:"connections"`
	Accepted    int64  `json:"accepted"`
	Requests    int64  `json:"requests"`
	Errors      int64  `json:"errors"`
	// Refused counts connections closed at once because max_connections
	// were open.
	Refused int64 `json:"refused"`
}

// Listeners lists the listeners, by name.
func (k *Kernel) Listeners() []ListenerInfo {
	k.mu.Lock()
	ls := slices.Collect(maps.Values(k.listeners))
	k.mu.Unlock()
	out := make([]ListenerInfo, 0, len(ls))
	for _, l := range ls {
		st := l.srv.counters()
		lc := l.cfg.Load()
		out = append(out, ListenerInfo{
			Name:        lc.Name,
			Protocol:    lc.Protocol,
			Address:     lc.Address,
			Bound:       l.sock.ln.Addr().String(),
			Plugin:      l.route.slot.Load().name,
			Connections: st.Connections,
			Accepted:    st.Accepted,
			Requests:    st.Requests,
			Errors:      st.Errors,
			Refused:     l.srv.refused(),
		})
	}
	slices.SortFunc(out, func(a, b ListenerInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// ReloadResult is the answer to `ctl reload PLUGIN`.
type ReloadResult struct {
	Name       string `json:"name"`
	Generation uint64 `json:"generation"`
	Version    string `json:"version"`
	PID        int    `json:"pid"`
	SHA256     string `json:"sha256"`
}

// Reload swaps the plugin now, even if its executable is unchanged. It
// answers once the new version serves, or with the error that kept the old
// one.
func (k *Kernel) Reload(ctx context.Context, name string) (*ReloadResult, error) {
	k.mu.Lock()
	s, ok := k.slots[name]
	names := slices.Sorted(maps.Keys(k.slots))
	k.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no plugin %q (have %s)", name, strings.Join(names, ", "))
	}
	in, err := s.swap(ctx, true, "ctl reload")
	if err != nil {
		return nil, err
	}
	return &ReloadResult{Name: name, Generation: in.gen, Version: in.version, PID: in.pid, SHA256: in.bin.hash}, nil
}

func (k *Kernel) setLevel(s string) (any, error) {
	l, err := ParseLevel(s)
	if err != nil {
		return nil, err
	}
	k.level.Set(l)
	return map[string]string{"log_level": strings.ToLower(l.String())}, nil
}

// stateCommand answers the state commands on full keys.
func (k *Kernel) stateCommand(ctx context.Context, cmd admin.Command) (any, error) {
	st := k.store
	if st == nil {
		return nil, errors.New("the store is not open")
	}
	switch cmd.Name {
	case "state get":
		v, err := st.Get(ctx, cmd.Args[0])
		if err != nil {
			return nil, err
		}
		if utf8.Valid(v) {
			return StateValue{Key: cmd.Args[0], Value: string(v)}, nil
		}
		return StateValue{Key: cmd.Args[0], Value: base64.StdEncoding.EncodeToString(v), Encoding: "base64"}, nil
	case "state put":
		if err := st.Put(ctx, cmd.Args[0], []byte(cmd.Args[1])); err != nil {
			return nil, err
		}
		return state.Entry{Key: cmd.Args[0], Size: len(cmd.Args[1])}, nil
	case "state del":
		if err := st.Delete(ctx, cmd.Args[0]); err != nil {
			return nil, err
		}
		return map[string]string{"deleted": cmd.Args[0]}, nil
	default: // state list
		prefix := ""
		if len(cmd.Args) > 0 {
			prefix = cmd.Args[0]
		}
		es, err := st.List(ctx, prefix)
		if es == nil {
			es = []state.Entry{}
		}
		return es, err
	}
}
