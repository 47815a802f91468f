package sdk_test

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

func TestDNS(t *testing.T) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		switch r.Question[0].Name {
		case "panic.test.":
			panic("boom")
		case "silent.test.":
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		_, hasHost := sdk.DNSContext(w).Deadline()
		ua, isUDP := w.RemoteAddr().(*net.UDPAddr)
		txt := []string{r.Question[0].Name, w.RemoteAddr().String()}
		if isUDP && ua.Port == 53000 && hasHost {
			txt = append(txt, "udp-with-deadline")
		}
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: txt})
		w.WriteMsg(m)
	})
	p, err := sdktest.Start(t, sdk.Plugin{Name: "d", Version: "v0", DNS: h}, nil, sdktest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Describe.GetProtocols(), ","); got != "dns" {
		t.Errorf("protocols %q", got)
	}
	q := new(dns.Msg)
	q.SetQuestion("hello.test.", dns.TypeTXT)
	r, err := p.Exchange(q)
	if err != nil {
		t.Fatal(err)
	}
	if r.Id != q.Id || len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, " ") != "hello.test. 192.0.2.1:53000 udp-with-deadline" {
		t.Errorf("answer %v", r)
	}
	for _, name := range []string{"panic.test.", "silent.test."} {
		q.SetQuestion(name, dns.TypeA)
		if r, err := p.Exchange(q); err == nil {
			t.Errorf("%s: answered %v, want an error", name, r)
		}
	}
}
