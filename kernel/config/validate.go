package config

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Protocols the configuration language knows.
var knownProtocols = []string{"http", "scgi", "dns", "line"}

// supportedProtocols are the protocols this build serves: a listener with
// another known protocol is rejected as not supported yet. Add a protocol
// here when its front end lands.
var supportedProtocols = []string{"http", "scgi", "dns", "line"}

// protocolKeys lists the listener keys that apply to some protocols only.
// Parse rejects one set on a listener of another protocol, and Marshal
// prints each only where it applies.
var protocolKeys = map[string][]string{
	"max_body":            {"http", "scgi"},
	"max_header_bytes":    {"http", "scgi"},
	"read_header_timeout": {"http"},
	"read_timeout":        {"http"},
	"idle_timeout":        {"http", "line", "dns"},
	"max_connections":     {"http", "scgi", "line", "dns"},
	"max_inflight":        {"dns"},
	"timeout":             {"scgi"},
	"max_line":            {"line"},
	"telnet":              {"line"},
	"utf8":                {"line"},
	"max_output":          {"line"},
	"write_timeout":       {"http", "line"},
}

// applies reports whether the listener key applies to protocol.
func applies(key, protocol string) bool {
	ps, ok := protocolKeys[key]
	return !ok || slices.Contains(ps, protocol)
}

// Defaults.
const (
	defaultDrainTimeout = Duration(30 * time.Second)
	defaultCallTimeout  = Duration(10 * time.Second)
	defaultStartTimeout = Duration(5 * time.Second)

	defaultMaxBody           = 10 << 20
	defaultMaxHeaderBytes    = 1 << 20
	defaultReadHeaderTimeout = Duration(10 * time.Second)
	defaultReadTimeout       = Duration(60 * time.Second)
	defaultIdleTimeout       = Duration(120 * time.Second)
	defaultSCGITimeout       = Duration(30 * time.Second)
	defaultMaxLine           = 4096
	defaultLineIdleTimeout   = Duration(5 * time.Minute)
	defaultMaxOutput         = 1 << 20
	defaultWriteTimeout      = Duration(30 * time.Second)
	defaultHTTPWriteTimeout  = Duration(60 * time.Second)
	defaultDNSIdleTimeout    = Duration(10 * time.Second)
	defaultMaxConnections    = 10000
	defaultMaxInflight       = 1024

	defaultUpgradeTimeout  = Duration(30 * time.Second)
	defaultHungCalls       = 8
	defaultMaxMemory       = 1 << 30
	defaultQuarantineAfter = 5
	defaultRollbackWindow  = Duration(30 * time.Second)
)

// maxUnixPath is the longest UNIX socket path the kernel can bind on Linux
// (sun_path is 108 bytes, NUL included).
const maxUnixPath = 107

const unixPrefix = "unix:"

// checker applies defaults, resolves paths and validates a decoded Config,
// collecting every problem.
type checker struct {
	c      *Config
	idx    *index
	source string
	errs   []*posError
}

func (k *checker) errorf(at keyPath, format string, args ...any) {
	k.errs = append(k.errs, &posError{source: k.source, pos: k.idx.near(at), msg: fmt.Sprintf(format, args...)})
}

func (k *checker) err() error { return joinSorted(k.errs) }

func (k *checker) check() {
	c := k.c
	root := keyPath{}
	k.path(root.key("admin").key("socket"), "admin.socket", &c.Admin.Socket)
	if len(c.Admin.Socket) > maxUnixPath {
		k.errorf(root.key("admin").key("socket"), "admin.socket: path is %d bytes, longer than a UNIX socket allows (%d)", len(c.Admin.Socket), maxUnixPath)
	}
	k.path(root.key("state").key("dir"), "state.dir", &c.State.Dir)
	positive(k, root.key("upgrade").key("timeout"), "upgrade", &c.Upgrade.Timeout, defaultUpgradeTimeout)
	if c.Privileges.Group != "" && c.Privileges.User == "" {
		k.errorf(root.key("privileges").key("group"), "privileges.group needs privileges.user")
	}

	if c.Plugins == nil {
		c.Plugins = map[string]*Plugin{}
	}
	names := make([]string, 0, len(c.Plugins))
	for name := range c.Plugins {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if c.Plugins[name] == nil {
			c.Plugins[name] = &Plugin{}
		}
		k.plugin(name, c.Plugins[name])
	}

	if len(c.Listeners) == 0 {
		c.Listeners = nil
	}
	listenerNames := map[string]bool{}
	addresses := map[string]string{}
	if c.Admin.Socket != "" {
		addresses[unixPrefix+filepath.Clean(c.Admin.Socket)] = "admin.socket"
	}
	k.metrics(addresses)
	for i := range c.Listeners {
		if c.Listeners[i] == nil {
			c.Listeners[i] = &Listener{}
		}
		k.listener(i, c.Listeners[i], listenerNames, addresses)
	}

	if len(c.Timers) == 0 {
		c.Timers = nil
	}
	timerNames := map[string]bool{}
	for i := range c.Timers {
		if c.Timers[i] == nil {
			c.Timers[i] = &Timer{}
		}
		k.timer(i, c.Timers[i], timerNames)
	}
}

// path resolves *p against the base directory unless it is empty or
// absolute, and cleans it: the kernel compares paths (file events name a
// file by its clean path), so /opt//x and /opt/./x must become /opt/x.
func (k *checker) path(at keyPath, what string, p *string) {
	switch {
	case *p == "":
	case strings.IndexByte(*p, 0) >= 0:
		k.errorf(at, "%s contains a NUL byte", what)
	case !filepath.IsAbs(*p):
		*p = filepath.Join(k.c.Dir, *p)
	default:
		*p = filepath.Clean(*p)
	}
}

func (k *checker) plugin(name string, p *Plugin) {
	at := keyPath{}.key("plugins").key(name)
	what := fmt.Sprintf("plugin %q", name)
	p.Name = name
	if !validName(name) {
		k.errorf(at, "%s: bad name: use lower-case letters, digits, '-' and '_', starting with a letter or digit", what)
	}
	if p.Path == "" {
		k.errorf(at, "%s: path is required", what)
	} else {
		k.path(at.key("path"), what+": path", &p.Path)
	}
	for i, a := range p.Args {
		if strings.IndexByte(a, 0) >= 0 {
			k.errorf(at.key("args").elem(i), "%s: args[%d] contains a NUL byte", what, i)
		}
	}
	if len(p.Args) == 0 {
		p.Args = nil
	}
	for _, name := range sortedKeys(p.Env) {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			k.errorf(at.key("env").key(name), "%s: env: bad variable name %q", what, name)
		}
		if strings.IndexByte(p.Env[name], 0) >= 0 {
			k.errorf(at.key("env").key(name), "%s: env: %s contains a NUL byte", what, name)
		}
	}
	if len(p.Env) == 0 {
		p.Env = nil
	}
	if p.Watch == nil {
		p.Watch = ptr(true)
	}
	positive(k, at.key("drain_timeout"), what, &p.DrainTimeout, defaultDrainTimeout)
	positive(k, at.key("call_timeout"), what, &p.CallTimeout, defaultCallTimeout)
	positive(k, at.key("start_timeout"), what, &p.StartTimeout, defaultStartTimeout)
	positive(k, at.key("hung_calls"), what, &p.HungCalls, defaultHungCalls)
	positive(k, at.key("max_memory"), what, &p.MaxMemory, defaultMaxMemory)
	positive(k, at.key("quarantine_after"), what, &p.QuarantineAfter, defaultQuarantineAfter)
	positive(k, at.key("rollback_window"), what, &p.RollbackWindow, defaultRollbackWindow)
	if p.Rollback == nil {
		p.Rollback = ptr(true)
	}
	if p.SHA256 != "" {
		p.SHA256 = strings.ToLower(p.SHA256)
		if len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "" {
			k.errorf(at.key("sha256"), "%s: sha256 must be 64 hex digits, got %q", what, p.SHA256)
		}
	}

	if p.Settings == nil {
		p.Settings = map[string]any{}
	}
	sat := at.key("settings")
	bad := false
	for _, key := range sortedKeys(p.Settings) {
		v, err := jsonValue(p.Settings[key], sat.key(key))
		if err != nil {
			k.errorf(err.at, "%s: %s: %s", what, err.at[len(sat)-1:], err.msg)
			bad = true
			continue
		}
		p.Settings[key] = v
	}
	if _, err := json.Marshal(p.Settings); err != nil && !bad {
		k.errorf(sat, "%s: settings cannot be passed as JSON: %v", what, err)
	}
}

func (k *checker) listener(i int, l *Listener, names map[string]bool, addresses map[string]string) {
	at := keyPath{}.key("listeners").elem(i)
	what := fmt.Sprintf("listener %q", l.Name)
	switch {
	case l.Name == "":
		what = fmt.Sprintf("listener #%d", i+1)
		k.errorf(at, "%s: name is required", what)
	case !validName(l.Name):
		k.errorf(at.key("name"), "%s: bad name: use lower-case letters, digits, '-' and '_', starting with a letter or digit", what)
	case names[l.Name]:
		k.errorf(at.key("name"), "%s: name is used by another listener", what)
	}
	names[l.Name] = true

	known := slices.Contains(knownProtocols, l.Protocol)
	switch {
	case l.Protocol == "":
		k.errorf(at, "%s: protocol is required (one of %s)", what, strings.Join(knownProtocols, ", "))
	case !known:
		k.errorf(at.key("protocol"), "%s: unknown protocol %q (want one of %s)", what, l.Protocol, strings.Join(knownProtocols, ", "))
	case !slices.Contains(supportedProtocols, l.Protocol):
		k.errorf(at.key("protocol"), "%s: protocol %q is not supported by this build yet", what, l.Protocol)
	}
	misplaced := map[string]bool{}
	if known {
		for _, key := range sortedKeys(protocolKeys) {
			if k.idx.has(at.key(key)) && !applies(key, l.Protocol) {
				k.errorf(at.key(key), "%s: %s applies only to %s listeners, not %s", what, key, strings.Join(protocolKeys[key], " and "), l.Protocol)
				misplaced[key] = true
			}
		}
	}

	k.address(at, what, l, addresses)

	switch {
	case l.Plugin == "":
		k.errorf(at, "%s: plugin is required", what)
	case k.c.Plugins[l.Plugin] == nil:
		k.errorf(at.key("plugin"), "%s: plugin %q is not defined", what, l.Plugin)
	}

	// Every key gets its default, whatever the protocol, so the kernel finds
	// every field set; only the ones that apply are checked.
	listenerPositive(k, at, what, misplaced, "max_body", &l.MaxBody, defaultMaxBody)
	listenerPositive(k, at, what, misplaced, "max_header_bytes", &l.MaxHeaderBytes, defaultMaxHeaderBytes)
	listenerPositive(k, at, what, misplaced, "read_header_timeout", &l.ReadHeaderTimeout, defaultReadHeaderTimeout)
	listenerPositive(k, at, what, misplaced, "read_timeout", &l.ReadTimeout, defaultReadTimeout)
	idle, write := defaultIdleTimeout, defaultHTTPWriteTimeout
	switch l.Protocol {
	case "line":
		idle, write = defaultLineIdleTimeout, defaultWriteTimeout
	case "dns":
		idle = defaultDNSIdleTimeout
	}
	listenerPositive(k, at, what, misplaced, "idle_timeout", &l.IdleTimeout, idle)
	listenerPositive(k, at, what, misplaced, "max_connections", &l.MaxConnections, defaultMaxConnections)
	listenerPositive(k, at, what, misplaced, "max_inflight", &l.MaxInflight, defaultMaxInflight)
	listenerPositive(k, at, what, misplaced, "timeout", &l.Timeout, defaultSCGITimeout)
	listenerPositive(k, at, what, misplaced, "max_line", &l.MaxLine, defaultMaxLine)
	listenerPositive(k, at, what, misplaced, "max_output", &l.MaxOutput, defaultMaxOutput)
	listenerPositive(k, at, what, misplaced, "write_timeout", &l.WriteTimeout, write)
	if l.UTF8 == nil {
		l.UTF8 = ptr(true)
	}
}

// address checks l.Address, resolves a relative unix: path, and rejects an
// address another listener already uses. Port 0 (any free port) is never a
// clash.
func (k *checker) address(at keyPath, what string, l *Listener, used map[string]string) {
	aat := at.key("address")
	var key string
	switch rest, isUnix := strings.CutPrefix(l.Address, unixPrefix); {
	case l.Address == "":
		k.errorf(at, "%s: address is required (host:port or unix:PATH)", what)
		return
	case isUnix:
		if l.Protocol == "dns" {
			k.errorf(aat, "%s: address %q: a dns listener cannot use a UNIX socket", what, l.Address)
		}
		switch {
		case rest == "":
			k.errorf(aat, "%s: address %q: the socket path is missing", what, l.Address)
			return
		case strings.IndexByte(rest, 0) >= 0:
			k.errorf(aat, "%s: address contains a NUL byte", what)
			return
		case strings.HasPrefix(rest, RuntimeVar+"/"):
			// The kernel puts the path in its runtime directory, and
			// ExpandRuntime checks its length then.
		case !filepath.IsAbs(rest):
			rest = filepath.Join(k.c.Dir, rest)
			l.Address = unixPrefix + rest
		}
		if len(rest) > maxUnixPath && !strings.HasPrefix(rest, RuntimeVar+"/") {
			k.errorf(aat, "%s: address %q: path is %d bytes, longer than a UNIX socket allows (%d)", what, l.Address, len(rest), maxUnixPath)
		}
		key = unixPrefix + filepath.Clean(rest)
	default:
		var problem string
		if key, problem = tcpAddress(l.Address, "want host:port or unix:PATH"); problem != "" {
			k.errorf(aat, "%s: address %q: %s", what, l.Address, problem)
			return
		}
	}
	if key == "" {
		return
	}
	if other, ok := used[key]; ok {
		k.errorf(aat, "%s: address %q is already used by %s", what, l.Address, other)
		return
	}
	used[key] = what
}

// metrics checks metrics.address: host:port, or "" for no metrics.
func (k *checker) metrics(used map[string]string) {
	at := keyPath{}.key("metrics").key("address")
	addr := k.c.Metrics.Address
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, unixPrefix) {
		k.errorf(at, "metrics.address %q: want host:port (Prometheus scrapes over TCP)", addr)
		return
	}
	key, msg := tcpAddress(addr, "want host:port")
	if msg != "" {
		k.errorf(at, "metrics.address %q: %s", addr, msg)
		return
	}
	if key != "" {
		used[key] = "metrics.address"
	}
}

// tcpAddress checks a host:port address and returns the key that detects
// two uses of it ("" for port 0, which never clashes), or what is wrong.
// A malformed address gets the problem want.
func tcpAddress(addr, want string) (key, problem string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", want
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Sprintf("port %q is not a number from 0 to 65535", port)
	}
	if !validHost(host) {
		return "", fmt.Sprintf("bad host %q", host)
	}
	if n == 0 {
		return "", ""
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.FormatUint(n, 10)), ""
}

func (k *checker) timer(i int, t *Timer, names map[string]bool) {
	at := keyPath{}.key("timers").elem(i)
	what := fmt.Sprintf("timer %q", t.Name)
	switch {
	case t.Name == "":
		what = fmt.Sprintf("timer #%d", i+1)
		k.errorf(at, "%s: name is required", what)
	case !validName(t.Name):
		k.errorf(at.key("name"), "%s: bad name: use lower-case letters, digits, '-' and '_', starting with a letter or digit", what)
	case names[t.Name]:
		k.errorf(at.key("name"), "%s: name is used by another timer", what)
	}
	names[t.Name] = true
	if t.Every == 0 && !k.idx.has(at.key("every")) {
		k.errorf(at, "%s: every is required", what)
	} else {
		positive(k, at.key("every"), what, &t.Every, 0)
	}
	switch {
	case t.Plugin == "":
		k.errorf(at, "%s: plugin is required", what)
	case k.c.Plugins[t.Plugin] == nil:
		k.errorf(at.key("plugin"), "%s: plugin %q is not defined", what, t.Plugin)
	}
}

// positive sets *v to def when the document leaves it out, and rejects an
// explicit value that is zero or negative.
func positive[T ~int | ~int64](k *checker, at keyPath, what string, v *T, def T) {
	if *v == 0 && !k.idx.has(at) {
		*v = def
		return
	}
	if *v <= 0 {
		k.errorf(at, "%s: %s must be positive, got %v", what, at[len(at)-1].key, *v)
	}
}

// listenerPositive is positive for a listener key, silent about a key
// already reported as not applying to the listener's protocol.
func listenerPositive[T ~int | ~int64](k *checker, at keyPath, what string, misplaced map[string]bool, key string, v *T, def T) {
	if misplaced[key] {
		return
	}
	positive(k, at.key(key), what, v, def)
}

// validName reports whether s matches ^[a-z0-9][a-z0-9_-]*$, the names of
// plugins (which prefix their store keys), listeners and timers.
func validName(s string) bool {
	if s == "" || s[0] == '-' || s[0] == '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validHost accepts an empty host (all interfaces), an IP address (with an
// IPv6 zone) or a host name.
func validHost(h string) bool {
	if h == "" {
		return true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

type settingError struct {
	at  keyPath
	msg string
}

// jsonValue converts a decoded TOML value to what the plugin will see in
// JSON: dates and times become RFC 3339 strings; NaN and infinities, which
// JSON cannot carry, are errors.
func jsonValue(v any, at keyPath) (any, *settingError) {
	switch x := v.(type) {
	case string, int64, bool:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, &settingError{at, fmt.Sprintf("%v cannot be passed to the plugin as JSON", x)}
		}
		return x, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case toml.LocalDate:
		return x.String(), nil
	case toml.LocalTime:
		return x.String(), nil
	case toml.LocalDateTime:
		return x.String(), nil
	case []any:
		for i, e := range x {
			n, err := jsonValue(e, at.elem(i))
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
		return x, nil
	case map[string]any:
		for _, key := range sortedKeys(x) {
			n, err := jsonValue(x[key], at.key(key))
			if err != nil {
				return nil, err
			}
			x[key] = n
		}
		return x, nil
	}
	return nil, &settingError{at, fmt.Sprintf("unexpected %T value", v)}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	return keys
}

func ptr[T any](v T) *T { return &v }
