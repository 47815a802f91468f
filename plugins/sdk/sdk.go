package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/miekg/dns"
	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/internal/gctune"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// The go-plugin handshake between the kernel and a plugin. A plugin written
// in another language speaks the same: it checks the environment variable
// MagicCookieKey for MagicCookieValue and prints go-plugin's handshake line
// with ProtocolVersion and protocol "grpc".
const (
	MagicCookieKey   = "SWITCHYARD_PLUGIN"
	MagicCookieValue = "4f1c0a3e-switchyard-handler"
	ProtocolVersion  = 1
	// PluginName is the name under which the Plugin gRPC service is
	// dispensed in go-plugin's plugin set.
	PluginName = "switchyard"
	// SDKProtocol is the version of the Calls stream framing this SDK speaks,
	// reported by Describe.
	SDKProtocol = 1
	// MaxMessageSize bounds one gRPC message in either direction. Bodies
	// travel in frames far smaller than this.
	MaxMessageSize = 64 << 20
)

// Handshake returns the go-plugin handshake configuration for switchyard
// plugins.
func Handshake() goplugin.HandshakeConfig {
	return goplugin.HandshakeConfig{
		ProtocolVersion:  ProtocolVersion,
		MagicCookieKey:   MagicCookieKey,
		MagicCookieValue: MagicCookieValue,
	}
}

// Plugin is what a plugin serves. Set the handlers for the protocols the
// plugin speaks; the kernel refuses to route a listener to a plugin that
// lacks its protocol.
type Plugin struct {
	// Name and Version describe the plugin to the kernel; `switchyard ctl
	// plugins` shows them. Set Version at build time with
	// -ldflags "-X main.version=V".
	Name    string
	Version string

	// HTTP answers HTTP requests, and SCGI requests rebuilt as HTTP ones.
	// It is called concurrently, each call with a request whose context
	// carries the kernel's deadline and is cancelled when the client goes
	// away or the kernel retires this process.
	HTTP http.Handler

	// DNS answers DNS queries, with a miekg/dns handler. The kernel has
	// parsed the query; it validates the answer (id and question), truncates
	// it for UDP clients, and answers SERVFAIL when the handler writes none,
	// panics or runs past the deadline. DNSContext(w) gives the call's
	// context. It is called concurrently.
	DNS dns.Handler

	// Line answers the connections of line listeners; see LineHandler.
	Line LineHandler

	// LineFailReply is the line the kernel sends a line client when an
	// event could not be answered: the plugin crashed, timed out or is
	// restarting (SMTP: "451 4.3.0 Temporary failure, try again"). Empty
	// sends nothing. The kernel keeps the reply of the version it last
	// started, so it has one when no process runs.
	LineFailReply string

	// Migrate, when set, converts the session state of a line connection
	// last answered by another version of the plugin. It is called the
	// first time this process meets such a session, before its event is
	// handled, with the other version's name and a copy of the state; what
	// it returns becomes the state. An error fails that event (the client
	// gets LineFailReply) and the next event tries again.
	Migrate func(ctx context.Context, fromVersion string, state map[string]string) (map[string]string, error)

	// Tick runs the timers that route to the plugin ([[timers]] in the
	// kernel's configuration). It is called concurrently for different
	// timers, never for one timer twice at once; ctx carries the kernel's
	// deadline (call_timeout) and the Host. An error is logged and counted
	// by the kernel; the schedule goes on.
	Tick func(ctx context.Context, t Tick) error

	// Configure, when set, is called with the slot's settings before the
	// first request reaches the plugin. Returning an error refuses the
	// settings: the kernel keeps the previous version serving and reports
	// the error.
	Configure func(ctx context.Context, c Config) error
}

// Config is what the kernel hands to Plugin.Configure.
type Config struct {
	// Slot is the plugin's name in the kernel's configuration; the shared
	// store keeps the plugin's keys under it.
	Slot string
	// Generation counts the starts and swaps of the slot, from 1.
	Generation uint64
	// Settings is the slot's [plugins.NAME.settings] table as a JSON object
	// ("{}" when there is none).
	Settings json.RawMessage
	// Listeners are the listeners that route to this plugin.
	Listeners []Listener
	// Host reaches back into the kernel.
	Host *Host
}

// Listener describes one listener that routes to the plugin.
type Listener struct {
	Name     string
	Protocol string
	Address  string
}

// Decode unmarshals the settings into v, which is usually a pointer to a
// struct with json tags. A setting v has no field for is an error, so a
// misspelt key in the kernel's configuration fails the swap instead of being
// silently ignored.
func (c Config) Decode(v any) error {
	data := c.Settings
	if len(data) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	return nil
}

// HeapFloor bounds the heap Serve lets a Go plugin's process grow to
// between garbage collections under load: with a live heap of a few MiB,
// GOGC=100 would collect dozens of times a second. The collector is tuned so
// that the heap may grow by what about a quarter of a second allocates, up
// to HeapFloor; at rest, and once the live heap is half of it, GOGC=100
// applies. GOGC in the plugin's env (the [plugins.NAME] env key) turns the
// tuning off.
const HeapFloor = 16 << 20

// Serve runs the plugin until the kernel stops it. It never returns to a
// plugin started by the kernel; run by hand, it prints that the program is a
// switchyard plugin and exits with status 1.
func Serve(p Plugin) {
	if err := p.check(); err != nil {
		fmt.Fprintf(os.Stderr, "switchyard plugin: %v\n", err)
		os.Exit(1)
	}
	if addr := os.Getenv(PprofEnv); addr != "" {
		startPprof(addr)
	}
	// A plugin's live heap is small and it allocates per call: the tuner
	// spares it most GC cycles under load. GOGC in its env turns it off.
	gctune.Start(HeapFloor)
	if httpAddr, dnsAddr := os.Getenv(StandaloneEnv), os.Getenv(StandaloneDNSEnv); (httpAddr != "" || dnsAddr != "") && os.Getenv(MagicCookieKey) == "" {
		os.Exit(serveStandalone(p, httpAddr, dnsAddr))
	}
	g := &grpcPlugin{plugin: p, calls: inheritedCalls()}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake(),
		Plugins: goplugin.PluginSet{
			PluginName: g,
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, ServerOptions()...)...)
		},
		// go-plugin's own records go to stderr as JSON, which the kernel
		// parses and logs with their level.
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Level:      hclog.Warn,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
	// go-plugin's Serve returns when the kernel stops the plugin, and also
	// when it could not start serving at all.
	if g.svc != nil && g.svc.described.Load() {
		os.Exit(0)
	}
	os.Exit(1)
}

// ServerOptions are the gRPC server options a plugin's server needs: message
// limits above gRPC's 4 MiB default and flow-control windows sized for a
// local socket.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(4 << 20),
		grpc.MaxConcurrentStreams(math.MaxUint32),
	}
}

func (p Plugin) check() error {
	if p.Name == "" {
		return errors.New("Plugin.Name is empty")
	}
	if p.HTTP == nil && p.DNS == nil && p.Line == nil && p.Tick == nil {
		return errors.New("Plugin has no handler (set HTTP, DNS, Line or Tick)")
	}
	return nil
}

// protocols lists what p serves, as Describe reports it.
func (p Plugin) protocols() []string {
	var ps []string
	if p.HTTP != nil {
		ps = append(ps, "http")
	}
	if p.DNS != nil {
		ps = append(ps, "dns")
	}
	if p.Line != nil {
		ps = append(ps, "line")
	}
	if p.Tick != nil {
		ps = append(ps, "timer")
	}
	return ps
}

// grpcPlugin is the plugin side of go-plugin's GRPCPlugin; the kernel side
// lives in package host.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	plugin Plugin
	calls  []net.Conn // framed calls connections from the kernel
	svc    *service   // set by GRPCServer, before any call arrives
}

var _ goplugin.GRPCPlugin = (*grpcPlugin)(nil)

func (g *grpcPlugin) GRPCServer(broker *goplugin.GRPCBroker, s *grpc.Server) error {
	g.svc = NewService(g.plugin, func(id uint32) (*grpc.ClientConn, error) {
		return broker.DialWithOptions(id, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize),
			grpc.MaxCallSendMsgSize(MaxMessageSize)))
	}).(*service)
	g.svc.framed = len(g.calls) > 0
	// The process's life bounds these: the kernel closes its ends when it
	// drains or stops the plugin.
	for _, c := range g.calls {
		go g.svc.serveFramed(c)
	}
	proto.RegisterPluginServer(s, g.svc)
	return nil
}

func (g *grpcPlugin) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the kernel side of the plugin lives in package host")
}
