package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// HostDialer connects to the kernel's Host service given the broker id the
// kernel sent in Configure.
type HostDialer func(brokerID uint32) (*grpc.ClientConn, error)

// NewService returns the gRPC service that Serve registers for p. It is
// exported for harnesses, such as package sdktest, that run a plugin without
// a process; plugin authors call Serve.
func NewService(p Plugin, dial HostDialer) proto.PluginServer {
	return &service{
		plugin: p,
		dial:   dial,
		host:   newHost("", 0, nil, slog.LevelInfo),
	}
}

type service struct {
	proto.UnimplementedPluginServer
	plugin Plugin
	dial   HostDialer

	sessions sessions // line sessions' state as this process last left it
	framed   bool     // calls also come on framed connections; set before serving

	// described is set once the kernel has asked Describe: from then on
	// the process is a working plugin, and its end is a clean one.
	described atomic.Bool

	mu       sync.Mutex
	host     *Host            // guarded by mu
	hostConn *grpc.ClientConn // guarded by mu
	hostID   uint32           // guarded by mu
}

func (s *service) Describe(context.Context, *proto.DescribeRequest) (*proto.DescribeResponse, error) {
	s.described.Store(true)
	return &proto.DescribeResponse{
		Name:          s.plugin.Name,
		Version:       s.plugin.Version,
		Protocols:     s.plugin.protocols(),
		SdkProtocol:   SDKProtocol,
		LineFailReply: s.plugin.LineFailReply,
		FramedCalls:   s.framed,
	}, nil
}

func (s *service) Configure(ctx context.Context, req *proto.ConfigureRequest) (*proto.ConfigureResponse, error) {
	host, err := s.connectHost(req)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect to host service: %v", err)
	}
	cfg := Config{
		Slot:       req.GetSlot(),
		Generation: req.GetGeneration(),
		Settings:   req.GetSettingsJson(),
		Host:       host,
	}
	if len(cfg.Settings) == 0 {
		cfg.Settings = []byte("{}")
	}
	for _, l := range req.GetListeners() {
		cfg.Listeners = append(cfg.Listeners, Listener{Name: l.GetName(), Protocol: l.GetProtocol(), Address: l.GetAddress()})
	}
	if s.plugin.Configure != nil {
		if err := callConfigure(ctx, s.plugin.Configure, cfg); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	s.mu.Lock()
	s.host = host
	s.mu.Unlock()
	return &proto.ConfigureResponse{}, nil
}

// connectHost dials the kernel's Host service once per broker id (go-plugin's
// broker hands out a connection for an id once); a reconfiguration with the
// same id keeps the connection.
func (s *service) connectHost(req *proto.ConfigureRequest) (*Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.GetHostBrokerId()
	level := slog.Level(req.GetLogLevel())
	if id == 0 || s.dial == nil {
		return newHost(req.GetSlot(), req.GetGeneration(), nil, level), nil
	}
	if id != s.hostID {
		conn, err := s.dial(id)
		if err != nil {
			return nil, err
		}
		if s.hostConn != nil {
			_ = s.hostConn.Close()
		}
		s.hostConn, s.hostID = conn, id
	}
	return newHost(req.GetSlot(), req.GetGeneration(), proto.NewHostClient(s.hostConn), level), nil
}

func (s *service) currentHost() *Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.host
}

// callConfigure runs the plugin's Configure, turning a panic into an error
// and a record in the kernel's log.
func callConfigure(ctx context.Context, f func(context.Context, Config) error, c Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.Host.Logger().Error("Configure panicked",
				slog.String("panic", fmt.Sprint(r)),
				slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("configure panicked: %v", r)
		}
	}()
	return f(ctx, c)
}

func (s *service) Calls(stream proto.Plugin_CallsServer) error {
	c := newCallStream(s, stream, stream.Context())
	return c.run()
}

// serveFramed serves calls on a framed connection the kernel passed the
// process, until the kernel closes its side, then sends what is left and
// closes it.
func (s *service) serveFramed(conn net.Conn) {
	fc := proto.NewFramedConn[*proto.Reply, *proto.Call](conn, MaxMessageSize, 0, func() *proto.Call { return new(proto.Call) })
	c := newCallStream(s, fc, context.Background())
	if err := c.run(); err != nil {
		// The kernel went away or broke the connection: nothing to flush.
		_ = fc.Close()
		return
	}
	_ = fc.Finish()
}

// logPanic reports a recovered handler panic into the kernel's log.
func (s *service) logPanic(what string, r any, stack []byte) {
	s.currentHost().Logger().Error("handler panicked",
		slog.String("handler", what),
		slog.String("panic", fmt.Sprint(r)),
		slog.String("stack", string(stack)))
}
