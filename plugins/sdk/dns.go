package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// DNSContext returns the context of the DNS call w answers: it carries the
// kernel's deadline and the plugin's Host (HostFrom), and is cancelled when
// the kernel gives up on the call. For a writer the SDK did not make, it
// returns context.Background().
func DNSContext(w dns.ResponseWriter) context.Context {
	if dw, ok := w.(*dnsWriter); ok {
		return dw.ctx
	}
	return context.Background()
}

func (s *callStream) startDNS(id uint64, timeoutNS int64, q *proto.DNSQuery) {
	h := s.svc.plugin.DNS
	if h == nil {
		_ = s.send(failure(id, "plugin serves no DNS"))
		return
	}
	s.startSingle(id, timeoutNS, func(c *call) (*proto.Reply, error) {
		msg, err := s.serveDNS(c, h, q)
		if err != nil {
			return nil, err
		}
		return &proto.Reply{Frame: &proto.Reply_Dns{Dns: &proto.DNSReply{Msg: msg}}}, nil
	})
}

// serveDNS runs h on the query and returns its answer in wire format, or
// nil when it wrote none.
func (s *callStream) serveDNS(c *call, h dns.Handler, q *proto.DNSQuery) (msg []byte, err error) {
	req := new(dns.Msg)
	if err := req.Unpack(q.GetMsg()); err != nil {
		return nil, fmt.Errorf("sdk: unpacking the query: %w", err)
	}
	c.ctx.listener = q.GetListener()
	w := &dnsWriter{ctx: c.ctx, tcp: q.GetTransport() == "tcp"}
	w.local = dnsAddr(q.GetLocalAddr(), w.tcp)
	w.remote = dnsAddr(q.GetRemoteAddr(), w.tcp)
	defer func() {
		if p := recover(); p != nil {
			s.svc.logPanic("dns "+questionName(req), p, debug.Stack())
			msg, err = nil, errors.New("handler panicked")
		}
	}()
	h.ServeDNS(w, req)
	return w.msg, w.err
}

func questionName(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return "(no question)"
	}
	return m.Question[0].Name + " " + dns.TypeToString[m.Question[0].Qtype]
}

// dnsAddr turns "ip:port" into the net.Addr a miekg/dns server would give:
// *net.UDPAddr or *net.TCPAddr.
func dnsAddr(s string, tcp bool) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if tcp {
			return &net.TCPAddr{}
		}
		return &net.UDPAddr{}
	}
	if tcp {
		return net.TCPAddrFromAddrPort(ap)
	}
	return net.UDPAddrFromAddrPort(ap)
}

// dnsWriter collects a DNS handler's answer; the kernel writes it to the
// client. Like a miekg/dns writer, it is for the handler's goroutine.
type dnsWriter struct {
	ctx           context.Context
	tcp           bool
	local, remote net.Addr
	msg           []byte // the answer, packed
	err           error
}

var _ dns.ResponseWriter = (*dnsWriter)(nil)

func (w *dnsWriter) LocalAddr() net.Addr  { return w.local }
func (w *dnsWriter) RemoteAddr() net.Addr { return w.remote }

// WriteMsg packs m as the answer. A second answer replaces the first.
func (w *dnsWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	w.msg = b
	return nil
}

// Write takes an answer already packed.
func (w *dnsWriter) Write(b []byte) (int, error) {
	w.msg = append([]byte(nil), b...)
	return len(b), nil
}

// Close does nothing: the kernel owns the connection.
func (w *dnsWriter) Close() error { return nil }

// TsigStatus reports no TSIG: the kernel does not verify TSIG.
func (w *dnsWriter) TsigStatus() error   { return nil }
func (w *dnsWriter) TsigTimersOnly(bool) {}
func (w *dnsWriter) Hijack()             {}
func (w *dnsWriter) Network() string     { return map[bool]string{false: "udp", true: "tcp"}[w.tcp] }
