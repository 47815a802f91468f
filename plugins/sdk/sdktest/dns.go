package sdktest

import (
	"context"
	"errors"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/plugins/host"
)

// Exchange sends the DNS query q to the plugin as the kernel would send a
// query that arrived over UDP from 192.0.2.1, and returns the plugin's
// answer. A handler that writes no answer is an error, as is a handler
// that panics; the kernel answers SERVFAIL for both.
func (p *Plugin) Exchange(q *dns.Msg) (*dns.Msg, error) {
	return p.ExchangeContext(context.Background(), q, "udp")
}

// ExchangeContext is Exchange with a context, whose deadline reaches the
// handler, and a transport ("udp" or "tcp").
func (p *Plugin) ExchangeContext(ctx context.Context, q *dns.Msg, transport string) (*dns.Msg, error) {
	wire, err := q.Pack()
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	b, err := p.client.ServeDNS(ctx, host.DNSQuery{
		Msg:        wire,
		RemoteAddr: "192.0.2.1:53000",
		LocalAddr:  "127.0.0.1:53",
		Transport:  transport,
		Listener:   p.listener,
	})
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("sdktest: the handler wrote no answer")
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return nil, err
	}
	return m, nil
}
