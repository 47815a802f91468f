package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// reloadWait bounds the wait for the watcher to pick up an edit.
const reloadWait = 10 * time.Second

// reloadFailed is what the plugin logs when an edited zone does not parse.
const reloadFailed = "zone file not reloaded; the old zone keeps serving"

// start runs the zone plugin in memory with settings and stops its watcher
// when the test ends.
func start(t *testing.T, settings any, o sdktest.Options) (*sdktest.Plugin, *zonePlugin) {
	t.Helper()
	zp := newZonePlugin("test")
	p, err := sdktest.Start(t, zp.plugin(), settings, o)
	t.Cleanup(zp.close)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return p, zp
}

func exampleFile(t testing.TB) string {
	t.Helper()
	path, err := filepath.Abs("example.zone")
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func exchange(t *testing.T, p *sdktest.Plugin, q *dns.Msg) *dns.Msg {
	t.Helper()
	a, err := p.Exchange(q)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	return a
}

// brief writes records as "NAME TYPE RDATA", in order.
func brief(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		h := rr.Header()
		data := strings.TrimPrefix(rr.String(), h.String())
		out = append(out, h.Name+" "+dns.TypeToString[h.Rrtype]+" "+data)
	}
	return out
}

const soaBrief = "example.test. SOA ns1.example.test. hostmaster.example.test. 2024010101 7200 3600 1209600 300"

func TestAnswers(t *testing.T) {
	testutil.CheckGoroutines(t)
	p, _ := start(t, map[string]any{"file": exampleFile(t)}, sdktest.Options{})
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		aa     bool
		answer []string
		ns     []string
		extra  []string
	}{
		{name: "SOA", qname: "example.test.", qtype: dns.TypeSOA, aa: true,
			answer: []string{soaBrief}},
		{name: "apex NS with glue", qname: "example.test.", qtype: dns.TypeNS, aa: true,
			answer: []string{"example.test. NS ns1.example.test.", "example.test. NS ns2.example.test."},
			extra:  []string{"ns1.example.test. A 192.0.2.2", "ns2.example.test. A 192.0.2.3", "ns2.example.test. AAAA 2001:db8::3"}},
		{name: "apex A", qname: "example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"example.test. A 192.0.2.1"}},
		{name: "apex AAAA", qname: "example.test.", qtype: dns.TypeAAAA, aa: true,
			answer: []string{"example.test. AAAA 2001:db8::1"}},
		{name: "MX with additional", qname: "example.test.", qtype: dns.TypeMX, aa: true,
			answer: []string{"example.test. MX 10 mail.example.test."},
			extra:  []string{"mail.example.test. A 192.0.2.25"}},
		{name: "apex TXT", qname: "example.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{`example.test. TXT "v=spf1 mx -all"`}},
		{name: "www A", qname: "www.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"www.example.test. A 192.0.2.10"}},
		{name: "www AAAA", qname: "www.example.test.", qtype: dns.TypeAAAA, aa: true,
			answer: []string{"www.example.test. AAAA 2001:db8::10"}},
		{name: "case insensitive", qname: "WWW.Example.TEST.", qtype: dns.TypeA, aa: true,
			answer: []string{"WWW.Example.TEST. A 192.0.2.10"}},
		{name: "TXT strings", qname: "txt.example.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{`txt.example.test. TXT "hello world" "second string"`}},
		{name: "SRV with additional", qname: "_sip._tcp.example.test.", qtype: dns.TypeSRV, aa: true,
			answer: []string{"_sip._tcp.example.test. SRV 10 60 5060 sip.example.test."},
			extra:  []string{"sip.example.test. A 192.0.2.50"}},
		{name: "PTR", qname: "10.2.0.192.rev.example.test.", qtype: dns.TypePTR, aa: true,
			answer: []string{"10.2.0.192.rev.example.test. PTR www.example.test."}},

		{name: "CNAME chain", qname: "alias.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"alias.example.test. CNAME alias2.example.test.", "alias2.example.test. CNAME www.example.test.", "www.example.test. A 192.0.2.10"}},
		{name: "CNAME chain AAAA", qname: "alias.example.test.", qtype: dns.TypeAAAA, aa: true,
			answer: []string{"alias.example.test. CNAME alias2.example.test.", "alias2.example.test. CNAME www.example.test.", "www.example.test. AAAA 2001:db8::10"}},
		{name: "CNAME asked for", qname: "alias.example.test.", qtype: dns.TypeCNAME, aa: true,
			answer: []string{"alias.example.test. CNAME alias2.example.test."}},
		{name: "CNAME chain to NODATA", qname: "alias.example.test.", qtype: dns.TypeMX, aa: true,
			answer: []string{"alias.example.test. CNAME alias2.example.test.", "alias2.example.test. CNAME www.example.test."},
			ns:     []string{soaBrief}},
		{name: "CNAME leaving the zone", qname: "outside.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"outside.example.test. CNAME www.example.net."}},
		{name: "CNAME to NXDOMAIN", qname: "dangling.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true,
			answer: []string{"dangling.example.test. CNAME nowhere.example.test."},
			ns:     []string{soaBrief}},

		{name: "NODATA", qname: "www.example.test.", qtype: dns.TypeMX, aa: true,
			ns: []string{soaBrief}},
		{name: "NODATA at empty non-terminal", qname: "b.deep.example.test.", qtype: dns.TypeA, aa: true,
			ns: []string{soaBrief}},
		{name: "NODATA at upper empty non-terminal", qname: "deep.example.test.", qtype: dns.TypeA, aa: true,
			ns: []string{soaBrief}},
		{name: "below the empty non-terminal", qname: "a.b.deep.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"a.b.deep.example.test. A 192.0.2.77"}},
		{name: "NXDOMAIN", qname: "nope.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true,
			ns: []string{soaBrief}},
		{name: "NXDOMAIN below a leaf", qname: "x.www.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true,
			ns: []string{soaBrief}},
		{name: "NXDOMAIN below empty non-terminal", qname: "x.b.deep.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true,
			ns: []string{soaBrief}},

		{name: "wildcard", qname: "foo.wild.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"foo.wild.example.test. A 192.0.2.99"}},
		{name: "wildcard deeper", qname: "a.b.wild.example.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{`a.b.wild.example.test. TXT "wildcard"`}},
		{name: "wildcard NODATA", qname: "foo.wild.example.test.", qtype: dns.TypeMX, aa: true,
			ns: []string{soaBrief}},
		{name: "wildcard not for an existing name", qname: "host.wild.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"host.wild.example.test. A 192.0.2.98"}},
		{name: "wildcard not for an existing name's other types", qname: "host.wild.example.test.", qtype: dns.TypeTXT, aa: true,
			ns: []string{soaBrief}},
		{name: "wildcard not for its empty non-terminal parent", qname: "wild.example.test.", qtype: dns.TypeA, aa: true,
			ns: []string{soaBrief}},
		{name: "wildcard asked literally", qname: "*.wild.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"*.wild.example.test. A 192.0.2.99"}},

		{name: "referral", qname: "sub.example.test.", qtype: dns.TypeNS,
			ns:    []string{"sub.example.test. NS ns1.sub.example.test."},
			extra: []string{"ns1.sub.example.test. A 192.0.2.53"}},
		{name: "referral below the cut", qname: "www.sub.example.test.", qtype: dns.TypeA,
			ns:    []string{"sub.example.test. NS ns1.sub.example.test."},
			extra: []string{"ns1.sub.example.test. A 192.0.2.53"}},
		{name: "referral for glue", qname: "ns1.sub.example.test.", qtype: dns.TypeA,
			ns:    []string{"sub.example.test. NS ns1.sub.example.test."},
			extra: []string{"ns1.sub.example.test. A 192.0.2.53"}},
		{name: "DS at the cut from the parent", qname: "sub.example.test.", qtype: dns.TypeDS, aa: true,
			ns: []string{soaBrief}},

		{name: "REFUSED outside", qname: "www.example.net.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "REFUSED parent", qname: "test.", qtype: dns.TypeSOA, rcode: dns.RcodeRefused},
		{name: "REFUSED root", qname: ".", qtype: dns.TypeNS, rcode: dns.RcodeRefused},
		{name: "REFUSED suffix not a label", qname: "badexample.test.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "AXFR refused", qname: "example.test.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := query(tt.qname, tt.qtype)
			q.Id = 4242
			a := exchange(t, p, q)
			if a.Id != q.Id || !a.Response {
				t.Errorf("id %d response %v, want %d true", a.Id, a.Response, q.Id)
			}
			if a.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[a.Rcode], dns.RcodeToString[tt.rcode])
			}
			if a.Authoritative != tt.aa {
				t.Errorf("AA %v, want %v", a.Authoritative, tt.aa)
			}
			check := func(section string, got []dns.RR, want []string) {
				t.Helper()
				if g := brief(got); !slices.Equal(g, want) {
					t.Errorf("%s:\n got %q\nwant %q", section, g, want)
				}
			}
			check("answer", a.Answer, tt.answer)
			check("authority", a.Ns, tt.ns)
			check("additional", a.Extra, tt.extra)
		})
	}
}

func TestANY(t *testing.T) {
	testutil.CheckGoroutines(t)
	p, _ := start(t, map[string]any{"file": exampleFile(t)}, sdktest.Options{})
	a := exchange(t, p, query("www.example.test.", dns.TypeANY))
	got := brief(a.Answer)
	slices.Sort(got)
	want := []string{"www.example.test. A 192.0.2.10", "www.example.test. AAAA 2001:db8::10"}
	if a.Rcode != dns.RcodeSuccess || !a.Authoritative || !slices.Equal(got, want) {
		t.Fatalf("ANY: rcode %s AA %v answer %q", dns.RcodeToString[a.Rcode], a.Authoritative, got)
	}
}

func TestMalformedQueries(t *testing.T) {
	testutil.CheckGoroutines(t)
	p, _ := start(t, map[string]any{"file": exampleFile(t)}, sdktest.Options{})
	tests := []struct {
		name  string
		msg   func() *dns.Msg
		rcode int
	}{
		{"no question", func() *dns.Msg { return &dns.Msg{MsgHdr: dns.MsgHdr{Id: 7}} }, dns.RcodeFormatError},
		{"two questions", func() *dns.Msg {
			m := query("www.example.test.", dns.TypeA)
			m.Question = append(m.Question, dns.Question{Name: "example.test.", Qtype: dns.TypeSOA, Qclass: dns.ClassINET})
			return m
		}, dns.RcodeFormatError},
		{"NOTIFY", func() *dns.Msg {
			m := query("example.test.", dns.TypeSOA)
			m.Opcode = dns.OpcodeNotify
			return m
		}, dns.RcodeNotImplemented},
		{"UPDATE", func() *dns.Msg {
			m := query("example.test.", dns.TypeSOA)
			m.Opcode = dns.OpcodeUpdate
			return m
		}, dns.RcodeNotImplemented},
		{"class CH", func() *dns.Msg {
			m := query("www.example.test.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, dns.RcodeRefused},
		{"EDNS version 1", func() *dns.Msg {
			m := query("www.example.test.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
			return m
		}, dns.RcodeBadVers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.msg()
			a := exchange(t, p, q)
			if a.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[a.Rcode], dns.RcodeToString[tt.rcode])
			}
			if a.Authoritative || len(a.Answer) != 0 {
				t.Errorf("AA %v answer %v, want neither", a.Authoritative, a.Answer)
			}
			if a.Opcode != q.Opcode || len(a.Question) != len(q.Question) {
				t.Errorf("opcode %d questions %d, want the query's %d %d", a.Opcode, len(a.Question), q.Opcode, len(q.Question))
			}
		})
	}
}

func TestEDNS0(t *testing.T) {
	testutil.CheckGoroutines(t)
	p, _ := start(t, map[string]any{"file": exampleFile(t)}, sdktest.Options{})
	t.Run("echoed", func(t *testing.T) {
		q := query("www.example.test.", dns.TypeA)
		q.SetEdns0(1232, false)
		a := exchange(t, p, q)
		opt := a.IsEdns0()
		if opt == nil {
			t.Fatal("no OPT in the answer")
		}
		if opt.UDPSize() != ednsSize || opt.Version() != 0 {
			t.Errorf("OPT size %d version %d", opt.UDPSize(), opt.Version())
		}
		if len(a.Answer) != 1 || !a.Authoritative {
			t.Errorf("answer %v AA %v", a.Answer, a.Authoritative)
		}
	})
	t.Run("absent", func(t *testing.T) {
		a := exchange(t, p, query("www.example.test.", dns.TypeA))
		if a.IsEdns0() != nil {
			t.Error("OPT in the answer to a query without one")
		}
	})
	t.Run("with additional", func(t *testing.T) {
		q := query("example.test.", dns.TypeMX)
		q.SetEdns0(4096, false)
		a := exchange(t, p, q)
		if a.IsEdns0() == nil || len(a.Extra) != 2 {
			t.Errorf("extra %v, want the glue and an OPT", a.Extra)
		}
	})
}

func TestBigTXT(t *testing.T) {
	testutil.CheckGoroutines(t)
	p, _ := start(t, map[string]any{"file": exampleFile(t)}, sdktest.Options{})
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			q := query("big.example.test.", dns.TypeTXT)
			q.SetEdns0(4096, false)
			a, err := p.ExchangeContext(context.Background(), q, transport)
			if err != nil {
				t.Fatal(err)
			}
			if a.Truncated || len(a.Answer) != 60 {
				t.Fatalf("TC %v, %d records, want the whole set of 60", a.Truncated, len(a.Answer))
			}
			for i, rr := range a.Answer {
				txt, ok := rr.(*dns.TXT)
				if !ok || len(txt.Txt) != 1 || len(txt.Txt[0]) != 200 {
					t.Fatalf("record %d: %v", i, rr)
				}
			}
			if n := a.Len(); n <= 4096 {
				t.Errorf("answer is %d bytes, want more than 4096", n)
			}
		})
	}
}

// writeZone writes a zone file into dir and returns its path.
func writeZone(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const smallZone = `$ORIGIN small.test.
$TTL 60
@    SOA ns hostmaster 1 7200 3600 1209600 300
     NS  ns
ns   A   192.0.2.1
www  A   192.0.2.10
`

func TestConfigureRefuses(t *testing.T) {
	testutil.CheckGoroutines(t)
	dir := t.TempDir()
	tests := []struct {
		name     string
		settings func() map[string]any
		want     []string // substrings of the error
	}{
		{"syntax error", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "syntax.zone", smallZone+"bad A 999.1.2.3\n")}
		}, []string{"syntax.zone", "line: 7"}},
		{"unknown type", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "type.zone", smallZone+"\n\nx  BOGUS 1\n")}
		}, []string{"type.zone", "line: 9"}},
		{"missing SOA", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "nosoa.zone", "$ORIGIN small.test.\nwww 60 A 192.0.2.1\n")}
		}, []string{"nosoa.zone", "no SOA"}},
		{"empty file", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "empty.zone", "")}
		}, []string{"empty.zone", "no SOA"}},
		{"two SOAs", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "twosoa.zone", smallZone+"other.test. 60 SOA ns hm 1 2 3 4 5\n")}
		}, []string{"twosoa.zone:7", "second SOA"}},
		{"record outside the zone", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "outside.zone", smallZone+"www.example.net. 60 A 192.0.2.1\n")}
		}, []string{"outside.zone:7", "outside the zone"}},
		{"record outside the zone on a later line", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "outside2.zone", smallZone+"; comment\n\nsmall.test.evil. 60 A 192.0.2.1 ; trailing\nok 60 A 192.0.2.2\n")}
		}, []string{"outside2.zone:9", "outside the zone"}},
		{"CNAME beside data", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "cname.zone", smallZone+"www CNAME ns\n")}
		}, []string{"cname.zone", "CNAME"}},
		{"class CH", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "chaos.zone", smallZone+"x CH TXT \"hi\"\n")}
		}, []string{"chaos.zone:7", "class CH"}},
		{"$INCLUDE", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "include.zone", smallZone+"$INCLUDE /etc/passwd\n")}
		}, []string{"include.zone", "line: 7"}},
		{"origin mismatch", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "origin.zone", smallZone), "origin": "other.test"}
		}, []string{"origin.zone", "other.test"}},
		{"missing file", func() map[string]any {
			return map[string]any{"file": filepath.Join(dir, "absent.zone")}
		}, []string{"absent.zone", "no such file"}},
		{"no file setting", func() map[string]any { return map[string]any{} }, []string{"file is required"}},
		{"unknown key", func() map[string]any {
			return map[string]any{"file": writeZone(t, dir, "ok.zone", smallZone), "fiel": "x"}
		}, []string{"unknown field", "fiel"}},
		{"wrong type", func() map[string]any { return map[string]any{"file": 3} }, []string{"settings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			zp := newZonePlugin("test")
			t.Cleanup(zp.close)
			_, err := sdktest.Start(t, zp.plugin(), tt.settings(), sdktest.Options{})
			if err == nil {
				t.Fatal("Configure accepted the settings")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestOriginSetting(t *testing.T) {
	testutil.CheckGoroutines(t)
	path := writeZone(t, t.TempDir(), "rel.zone", "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n NS ns\nns A 192.0.2.1\n")
	p, _ := start(t, map[string]any{"file": path, "origin": "rel.test"}, sdktest.Options{})
	a := exchange(t, p, query("ns.rel.test.", dns.TypeA))
	if got := brief(a.Answer); !slices.Equal(got, []string{"ns.rel.test. A 192.0.2.1"}) {
		t.Fatalf("answer %q", got)
	}
}

// answerA returns the address of name's A record, or "" when there is none.
func answerA(t *testing.T, p *sdktest.Plugin, name string) string {
	t.Helper()
	a := exchange(t, p, query(name, dns.TypeA))
	for _, rr := range a.Answer {
		if r, ok := rr.(*dns.A); ok {
			return r.A.String()
		}
	}
	return ""
}

func waitA(t *testing.T, p *sdktest.Plugin, name, want string) {
	t.Helper()
	testutil.WaitFor(t, reloadWait, name+" A "+want, func() bool { return answerA(t, p, name) == want })
}

func TestReload(t *testing.T) {
	testutil.CheckGoroutines(t)
	dir := t.TempDir()
	path := writeZone(t, dir, "small.zone", smallZone)
	var logs testutil.LogRecorder
	p, _ := start(t, map[string]any{"file": path}, sdktest.Options{Log: &logs})
	const www = "www.small.test."
	if got := answerA(t, p, www); got != "192.0.2.10" {
		t.Fatalf("www A = %q", got)
	}
	edit := func(addr string) string {
		return strings.Replace(smallZone, "192.0.2.10", addr, 1)
	}

	t.Run("in place", func(t *testing.T) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(edit("192.0.2.11")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		waitA(t, p, www, "192.0.2.11")
	})
	t.Run("rename over", func(t *testing.T) {
		tmp := writeZone(t, dir, ".small.zone.tmp", edit("192.0.2.12"))
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		waitA(t, p, www, "192.0.2.12")
	})
	t.Run("broken edit keeps the old zone", func(t *testing.T) {
		n := len(logs.Find(reloadFailed))
		writeZone(t, dir, "small.zone", edit("192.0.2.13")+"broken A 300.1.1.1\n")
		testutil.WaitFor(t, reloadWait, "the reload error in the log", func() bool {
			return len(logs.Find(reloadFailed)) > n
		})
		if got := answerA(t, p, www); got != "192.0.2.12" {
			t.Fatalf("www A = %q after a broken edit, want the old 192.0.2.12", got)
		}
	})
	t.Run("fixed edit after a broken one", func(t *testing.T) {
		writeZone(t, dir, "small.zone", edit("192.0.2.14"))
		waitA(t, p, www, "192.0.2.14")
	})
	t.Run("other files in the directory", func(t *testing.T) {
		writeZone(t, dir, "other.zone", "garbage")
		if err := os.Remove(filepath.Join(dir, "other.zone")); err != nil {
			t.Fatal(err)
		}
		writeZone(t, dir, "small.zone", edit("192.0.2.15"))
		waitA(t, p, www, "192.0.2.15")
	})
}

func TestReconfigure(t *testing.T) {
	testutil.CheckGoroutines(t)
	dir := t.TempDir()
	first := writeZone(t, dir, "first.zone", smallZone)
	p, zp := start(t, map[string]any{"file": first}, sdktest.Options{})
	second := writeZone(t, t.TempDir(), "second.zone", strings.Replace(smallZone, "192.0.2.10", "192.0.2.20", 1))

	configure := func(settings map[string]any) error {
		b, err := json.Marshal(settings)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		return zp.configure(ctx, sdk.Config{Slot: "test", Generation: 2, Settings: b, Host: sdk.HostFrom(ctx)})
	}
	zp.mu.Lock()
	old := zp.watch
	zp.mu.Unlock()
	if old == nil {
		t.Fatal("no watcher after Configure")
	}

	t.Run("broken file keeps the old zone and watcher", func(t *testing.T) {
		broken := writeZone(t, dir, "broken.zone", "nonsense\n")
		if err := configure(map[string]any{"file": broken}); err == nil {
			t.Fatal("Configure accepted a broken zone")
		}
		zp.mu.Lock()
		w := zp.watch
		zp.mu.Unlock()
		if w != old {
			t.Error("a refused Configure replaced the watcher")
		}
		if got := answerA(t, p, "www.small.test."); got != "192.0.2.10" {
			t.Errorf("www A = %q", got)
		}
	})
	t.Run("another file", func(t *testing.T) {
		if err := configure(map[string]any{"file": second}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-old.done:
		default:
			t.Fatal("the first file's watcher still runs")
		}
		if got := answerA(t, p, "www.small.test."); got != "192.0.2.20" {
			t.Errorf("www A = %q, want the second file's", got)
		}
		writeZone(t, filepath.Dir(second), "second.zone", strings.Replace(smallZone, "192.0.2.10", "192.0.2.21", 1))
		waitA(t, p, "www.small.test.", "192.0.2.21")
	})
}

func TestParseLines(t *testing.T) {
	// The line of an out-of-zone record, whatever surrounds it.
	tests := []struct {
		name string
		tail string
		line int
	}{
		{"next line", "evil.test. 60 A 192.0.2.1\n", 7},
		{"no final newline", "\n\nevil.test. 60 A 192.0.2.1", 9},
		{"after a multi-line record", "x 60 TXT ( \"a\"\n \"b\" )\nevil.test. 60 A 192.0.2.1\n", 9},
		{"after comments", "; one\n; two\nevil.test. 60 A 192.0.2.1 ; three\n", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseZone([]byte(smallZone+tt.tail), "f.zone", "")
			want := "f.zone:" + strconv.Itoa(tt.line) + ":"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want one naming %s", err, want)
			}
		})
	}
}

func FuzzLookup(f *testing.F) {
	z, err := loadZone("example.zone", "")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct {
		name  string
		qtype uint16
	}{
		{"www.example.test.", dns.TypeA}, {"alias.example.test.", dns.TypeA}, {"foo.wild.example.test.", dns.TypeTXT},
		{"b.deep.example.test.", dns.TypeA}, {"x.sub.example.test.", dns.TypeA}, {"nope.example.test.", dns.TypeMX},
		{"example.net.", dns.TypeA}, {".", dns.TypeNS}, {`a\.b.example.test.`, dns.TypeA}, {"*.example.test.", dns.TypeANY},
	} {
		f.Add(s.name, s.qtype)
	}
	p := &zonePlugin{}
	p.zone.Store(z)
	f.Fuzz(func(t *testing.T, name string, qtype uint16) {
		q := query(dns.Fqdn(name), qtype)
		wire, err := q.Pack()
		if err != nil {
			return
		}
		var in dns.Msg
		if err := in.Unpack(wire); err != nil {
			return
		}
		a := p.answer(&in)
		if _, err := a.Pack(); err != nil {
			t.Fatalf("packing the answer to %v: %v", in.Question, err)
		}
		if a.Rcode == dns.RcodeSuccess && a.Authoritative && len(a.Answer) == 0 && len(a.Ns) == 0 {
			t.Fatalf("empty NOERROR without SOA for %v", in.Question)
		}
	})
}

func TestCNAMELimits(t *testing.T) {
	testutil.CheckGoroutines(t)
	text := smallZone + "loop1 CNAME loop2\nloop2 CNAME loop1\n"
	for i := range 12 {
		text += "c" + strconv.Itoa(i) + " CNAME c" + strconv.Itoa(i+1) + "\n"
	}
	text += "c12 A 192.0.2.12\n"
	p, _ := start(t, map[string]any{"file": writeZone(t, t.TempDir(), "loops.zone", text)}, sdktest.Options{})
	tests := []struct {
		name, qname string
		records     int
	}{
		{"loop", "loop1.small.test.", 2},
		{"long chain stops at the limit", "c0.small.test.", maxChain},
		{"chain within the limit", "c5.small.test.", 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := exchange(t, p, query(tt.qname, dns.TypeA))
			if a.Rcode != dns.RcodeSuccess || !a.Authoritative || len(a.Answer) != tt.records {
				t.Fatalf("rcode %s AA %v answer %q, want NOERROR, AA and %d records",
					dns.RcodeToString[a.Rcode], a.Authoritative, brief(a.Answer), tt.records)
			}
		})
	}
}
