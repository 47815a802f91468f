package host

import (
	"context"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// DNSQuery is one DNS query for ServeDNS.
type DNSQuery struct {
	Msg        []byte // wire format
	RemoteAddr string // ip:port
	LocalAddr  string
	Transport  string // "udp" or "tcp"
	Listener   string
}

// ServeDNS sends a query to the plugin and returns its answer in wire
// format, or nil when the handler wrote none. ctx bounds the call and
// carries its deadline to the plugin. Errors are those of ServeHTTP; an
// error wrapping ErrNotSent means the query never reached the plugin and
// may be sent to another instance. The caller validates the answer.
func (c *Client) ServeDNS(ctx context.Context, q DNSQuery) ([]byte, error) {
	r, err := c.single(ctx, &proto.Call{Frame: &proto.Call_Dns{Dns: &proto.DNSQuery{
		Msg:        q.Msg,
		RemoteAddr: q.RemoteAddr,
		LocalAddr:  q.LocalAddr,
		Transport:  q.Transport,
		Listener:   q.Listener,
	}}})
	if err != nil {
		return nil, err
	}
	d, ok := r.GetFrame().(*proto.Reply_Dns)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected %T answering a DNS query", ErrProtocol, r.GetFrame())
	}
	return d.Dns.GetMsg(), nil
}

// ServeLine sends one event of a line connection and returns the plugin's
// reply. Errors are those of ServeDNS.
func (c *Client) ServeLine(ctx context.Context, ev *proto.LineEvent) (*proto.LineReply, error) {
	r, err := c.single(ctx, &proto.Call{Frame: &proto.Call_Line{Line: ev}})
	if err != nil {
		return nil, err
	}
	l, ok := r.GetFrame().(*proto.Reply_Line)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected %T answering a line event", ErrProtocol, r.GetFrame())
	}
	return l.Line, nil
}

// Tick runs one tick of a timer in the plugin. Errors are those of
// ServeDNS; ErrFailed carries the plugin's own error.
func (c *Client) Tick(ctx context.Context, t *proto.Tick) error {
	r, err := c.single(ctx, &proto.Call{Frame: &proto.Call_Tick{Tick: t}})
	if err != nil {
		return err
	}
	if _, ok := r.GetFrame().(*proto.Reply_Tick); !ok {
		return fmt.Errorf("%w: unexpected %T answering a tick", ErrProtocol, r.GetFrame())
	}
	return nil
}

// single makes a call whose answer is one frame: a DNS query, a line event,
// a tick. A Failure frame becomes an error wrapping ErrFailed.
func (c *Client) single(ctx context.Context, first *proto.Call) (*proto.Reply, error) {
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	s, err := c.pick()
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		first.TimeoutNs = max(int64(time.Until(d)), 1)
	}
	p, err := s.start(ctx, first)
	if err != nil {
		return nil, err
	}
	f, err := p.next(ctx)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			// The plugin has the same deadline and ends the call itself.
			p.stream.forget(p.id)
		} else {
			p.cancel("kernel gave up on the call")
		}
		return nil, err
	}
	p.stream.forget(p.id)
	if fr, ok := f.GetFrame().(*proto.Reply_Failure); ok {
		return nil, fmt.Errorf("%w: %s", ErrFailed, fr.Failure.GetMessage())
	}
	return f, nil
}
