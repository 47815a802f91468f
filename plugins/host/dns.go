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
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	s, err := c.pick()
	if err != nil {
		return nil, err
	}
	first := &proto.Call{Frame: &proto.Call_Dns{Dns: &proto.DNSQuery{
		Msg:        q.Msg,
		RemoteAddr: q.RemoteAddr,
		LocalAddr:  q.LocalAddr,
		Transport:  q.Transport,
		Listener:   q.Listener,
	}}}
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
	switch fr := f.GetFrame().(type) {
	case *proto.Reply_Dns:
		return fr.Dns.GetMsg(), nil
	case *proto.Reply_Failure:
		return nil, fmt.Errorf("%w: %s", ErrFailed, fr.Failure.GetMessage())
	default:
		return nil, fmt.Errorf("%w: unexpected %T answering a DNS query", ErrProtocol, fr)
	}
}
