package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/plugins/proto"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// DefaultStreams is how many Calls streams a Client opens when asked for 0.
const DefaultStreams = 4

// FramedSockets is how many framed calls sockets a plugin process is
// passed (see proto.CallsFDsEnv). One: a single writer on each side then
// gathers the most frames into each write. Measured with wrk here (50
// connections, 2 cores), hello served 31-32k requests/s on one socket and
// 25.7k on four.
const FramedSockets = 1

// Client speaks the plugin protocol to one plugin over a gRPC connection.
// Describe and Configure are unary; calls are spread over a few long-lived
// Calls streams opened by Open. A Client is safe for concurrent use.
type Client struct {
	plugin       proto.PluginClient
	hostBrokerID uint32

	mu          sync.Mutex
	framedConns []net.Conn         // the kernel's ends of the framed calls sockets, until Open; guarded by mu
	framed      bool               // Describe said the plugin serves them; guarded by mu
	opened      bool               // Open was called; guarded by mu
	streams     []*callStream      // set once by Open; guarded by mu
	cancel      context.CancelFunc // ends the streams; guarded by mu

	rr atomic.Uint32
}

// NewClient returns a Client on conn. hostBrokerID is the GRPCBroker id on
// which the Host service is served to this plugin, or 0 for none.
func NewClient(conn grpc.ClientConnInterface, hostBrokerID uint32) *Client {
	return &Client{plugin: proto.NewPluginClient(conn), hostBrokerID: hostBrokerID}
}

// Describe asks the plugin what it is.
func (c *Client) Describe(ctx context.Context) (*proto.DescribeResponse, error) {
	d, err := c.plugin.Describe(ctx, &proto.DescribeRequest{})
	if err != nil {
		return nil, fmt.Errorf("describe: %w", rpcError(err))
	}
	c.mu.Lock()
	c.framed = d.GetFramedCalls()
	c.mu.Unlock()
	return d, nil
}

// setFramed gives the Client the kernel's ends of the framed calls sockets
// passed to the plugin process; Open uses them if the plugin serves them.
func (c *Client) setFramed(conns []net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.framedConns = conns
}

// Configure hands the plugin its settings. The host broker id is filled in.
func (c *Client) Configure(ctx context.Context, req *proto.ConfigureRequest) error {
	req.HostBrokerId = c.hostBrokerID
	if _, err := c.plugin.Configure(ctx, req); err != nil {
		return fmt.Errorf("configure: %w", rpcError(err))
	}
	return nil
}

// rpcError turns a gRPC status into a plain error carrying the plugin's
// message. A connection that failed wraps ErrUnavailable, and a call that ran
// out of time wraps context.DeadlineExceeded, so callers can tell them from a
// plugin that refused.
func rpcError(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.Unavailable, codes.Canceled:
		return fmt.Errorf("%w: %s", ErrUnavailable, s.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, s.Message())
	default:
		return errors.New(s.Message())
	}
}

// Open opens n Calls streams (DefaultStreams when n <= 0). A plugin that
// said in Describe that it serves the framed calls sockets the kernel
// passed it gets its calls there instead, on as many streams as there are
// sockets. Calls made before Open fail with ErrUnavailable; Open may be
// called once.
func (c *Client) Open(n int) error {
	if n <= 0 {
		n = DefaultStreams
	}
	c.mu.Lock()
	opened, framed, conns := c.opened, c.framed, c.framedConns
	c.opened, c.framedConns = true, nil
	c.mu.Unlock()
	if opened {
		return errors.New("open calls streams: already open")
	}
	if framed && len(conns) > 0 {
		streams := make([]*callStream, 0, len(conns))
		for _, conn := range conns {
			fc := proto.NewFramedConn[*proto.Call, *proto.Reply](conn, sdk.MaxMessageSize, maxSendBlock, func() *proto.Reply { return new(proto.Reply) })
			s := newCallStream(fc, func() { fc.Close() })
			go s.read()
			streams = append(streams, s)
		}
		c.mu.Lock()
		c.streams = streams
		c.mu.Unlock()
		return nil
	}
	for _, conn := range conns {
		conn.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	streams := make([]*callStream, 0, n)
	for range n {
		sctx, abort := context.WithCancel(ctx)
		st, err := c.plugin.Calls(sctx)
		if err != nil {
			abort()
			cancel()
			for _, s := range streams {
				<-s.done
			}
			return fmt.Errorf("open calls stream: %w", rpcError(err))
		}
		s := newCallStream(st, func() { abort() })
		go s.read()
		streams = append(streams, s)
	}
	c.mu.Lock()
	c.streams, c.cancel = streams, cancel
	c.mu.Unlock()
	return nil
}

// pick returns a stream that takes calls, round robin.
func (c *Client) pick() (*callStream, error) {
	c.mu.Lock()
	streams := c.streams
	c.mu.Unlock()
	if len(streams) == 0 {
		return nil, fmt.Errorf("%w: %w: no calls stream open", ErrNotSent, ErrUnavailable)
	}
	start := int(c.rr.Add(1))
	for i := range streams {
		s := streams[(start+i)%len(streams)]
		if s.usable() {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: %w: every calls stream is broken or draining", ErrNotSent, ErrUnavailable)
}

// Usable reports whether some stream takes new calls: false once every
// stream has broken (the process died, or its gRPC server stopped) or is
// draining.
func (c *Client) Usable() bool {
	c.mu.Lock()
	streams := c.streams
	c.mu.Unlock()
	for _, s := range streams {
		if s.usable() {
			return true
		}
	}
	return false
}

// Drain tells the plugin that no more calls come: new calls fail with
// ErrNotSent, the calls in flight go on (their credit and cancellations still
// flow), and each stream ends once its last call has. Drain returns when
// every stream has ended, or with ctx's error when ctx is done first; Close
// then fails what is left.
func (c *Client) Drain(ctx context.Context) error {
	c.mu.Lock()
	streams := c.streams
	c.mu.Unlock()
	for _, s := range streams {
		s.drain()
	}
	for _, s := range streams {
		select {
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close cancels the streams, failing calls still in flight, and waits for
// the stream readers to exit.
func (c *Client) Close() {
	c.mu.Lock()
	streams, cancel, conns := c.streams, c.cancel, c.framedConns
	c.framedConns = nil
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	if cancel != nil {
		cancel()
	}
	for _, s := range streams {
		s.abort()
	}
	for _, s := range streams {
		<-s.done
	}
}
