package kernel

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// requireDig returns dig's path; without it the test fails under CI (which
// installs bind9-dnsutils) and is skipped elsewhere.
func requireDig(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("dig")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dig not found: CI must install bind9-dnsutils")
		}
		t.Skip("dig not installed")
	}
	return p
}

// dnsConfig serves plugin on a DNS listener at any free port.
func dnsConfig(plugin, settings string) string {
	return fmt.Sprintf(`
[plugins.%[1]s]
path = "plugins/%[1]s"
drain_timeout = "10s"
call_timeout = "5s"
%[2]s

[[listeners]]
name = "dns"
protocol = "dns"
address = "127.0.0.1:0"
plugin = "%[1]s"
`, plugin, settings)
}

// dnsAddr is the host:port a DNS listener serves on (UDP and TCP alike).
func (tk *testKernel) dnsAddr(listener string) string { return tk.bound(listener) }

func digArgs(addr string, args ...string) []string {
	host, port, _ := strings.Cut(addr, ":")
	return append([]string{"@" + host, "-p", port, "+time=5", "+tries=1"}, args...)
}

// TestDNSProbeWithDig asks the probe plugin through the kernel with dig,
// over UDP and TCP.
func TestDNSProbeWithDig(t *testing.T) {
	dig := requireDig(t)
	tk := startKernel(t, dnsConfig("probe", ""), map[string]string{"probe": probeBin(t, "v1")})
	addr := tk.dnsAddr("dns")
	for _, transport := range []string{"+notcp", "+tcp"} {
		out, err := exec.Command(dig, digArgs(addr, transport, "+short", "anything.example.", "TXT")...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"probe v1 pid `) {
			t.Errorf("dig %s: %v %q", transport, err, out)
		}
	}
}

// dnsSwapLoad is what swapDNSUnderLoad counted.
type dnsSwapLoad struct {
	ok, fails int64
	errs      []string
	byLabel   map[string]int64 // answers by the label check gave them
}

// swapDNSUnderLoad runs eight clients, half over UDP and half over TCP,
// asking the kernel's "dns" listener query(client, n) in a loop, while the
// executable of plugin is replaced ten times by the builds in bin (v1, v2,
// v3, alternately by rename and in place). check accepts an answer and
// labels it.
func swapDNSUnderLoad(t *testing.T, tk *testKernel, plugin string, bin map[string]string,
	query func(client, n int) *dns.Msg, check func(*dns.Msg) (label string, ok bool)) dnsSwapLoad {
	t.Helper()
	addr := tk.dnsAddr("dns")
	exe := filepath.Join(tk.dir, "plugins", plugin)
	ctx, stop := context.WithCancel(context.Background())
	var (
		wg        sync.WaitGroup
		ok, fails atomic.Int64
		mu        sync.Mutex
		res       = dnsSwapLoad{byLabel: map[string]int64{}}
	)
	defer func() {
		stop()
		wg.Wait()
	}()
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: []string{"udp", "tcp"}[i%2], Timeout: 5 * time.Second}
			for n := 0; ctx.Err() == nil; n++ {
				r, _, err := c.Exchange(query(i, n), addr)
				label, good := "", false
				if err == nil && r.Rcode == dns.RcodeSuccess {
					label, good = check(r)
				}
				mu.Lock()
				if good {
					res.byLabel[label]++
				} else if len(res.errs) < 10 {
					res.errs = append(res.errs, fmt.Sprintf("%s: %v %v", c.Net, r, err))
				}
				mu.Unlock()
				if good {
					ok.Add(1)
				} else {
					fails.Add(1)
				}
			}
		}()
	}
	for i := 1; i <= 10; i++ {
		before := tk.plugin(plugin)
		replace(t, bin[[]string{"v1", "v2", "v3"}[i%3]], exe, i%2 == 0)
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("generation %d", before.Generation+1), func() bool {
			return tk.plugin(plugin).Generation == before.Generation+1
		})
		n := ok.Load()
		testutil.WaitFor(t, 20*time.Second, "answers after the swap", func() bool { return ok.Load() > n+100 })
	}
	stop()
	wg.Wait()
	res.ok, res.fails = ok.Load(), fails.Load()
	return res
}

// TestDNSSwapUnderLoad queries at a high rate over UDP and TCP while the
// plugin is swapped ten times: every query is answered, none with SERVFAIL.
func TestDNSSwapUnderLoad(t *testing.T) {
	bin := buildVersions(t, "v1", "v2", "v3")
	tk := startKernel(t, dnsConfig("probe", ""), map[string]string{"probe": bin["v1"]})
	res := swapDNSUnderLoad(t, tk, "probe", bin, func(client, n int) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion(fmt.Sprintf("q%d-%d.example.", client, n), dns.TypeTXT)
		return q
	}, func(r *dns.Msg) (string, bool) {
		if len(r.Answer) != 1 {
			return "", false
		}
		txt, ok := r.Answer[0].(*dns.TXT)
		if !ok || len(strings.Fields(txt.Txt[0])) < 2 {
			return "", false
		}
		return strings.Fields(txt.Txt[0])[1], true // the version
	})
	if res.fails != 0 {
		t.Errorf("%d of %d queries failed during 10 swaps; first: %v", res.fails, res.fails+res.ok, res.errs)
	}
	if len(res.byLabel) != 3 {
		t.Errorf("answers by version: %v", res.byLabel)
	}
	t.Logf("%d queries over UDP and TCP during 10 swaps, %d failed; by version %v", res.ok, res.fails, res.byLabel)
}

// TestDNSFaults: a query that crashes the plugin, and one that outlives
// call_timeout, get SERVFAIL at once rather than silence; the plugin is
// restarted and answers again.
func TestDNSFaults(t *testing.T) {
	tk := startKernel(t, strings.Replace(dnsConfig("probe", ""), `call_timeout = "5s"`, `call_timeout = "300ms"`, 1),
		map[string]string{"probe": probeBin(t, "v1")})
	addr := tk.dnsAddr("dns")
	c := &dns.Client{Timeout: 10 * time.Second}
	ask := func(name string) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeTXT)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}
	if r := ask("slow.probe."); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("past call_timeout: %v", r)
	}
	pid := tk.plugin("probe").PID
	if r := ask("crash.probe."); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("crash: %v", r)
	}
	testutil.WaitFor(t, 10*time.Second, "a restarted plugin answering", func() bool {
		q := new(dns.Msg)
		q.SetQuestion("after.example.", dns.TypeTXT)
		r, _, err := c.Exchange(q, addr)
		return err == nil && r.Rcode == dns.RcodeSuccess
	})
	if p := tk.plugin("probe"); p.PID == pid || p.Restarts != 1 {
		t.Errorf("after the crash: %+v", p)
	}
}

// TestDNSReload adds a DNS listener by reload-config, re-routes it to
// another plugin without touching its sockets, and removes it, freeing
// both its UDP and its TCP port.
func TestDNSReload(t *testing.T) {
	base := probeConfig("") + `
[plugins.probe2]
path = "plugins/probe2"
`
	tk := startKernel(t, base, map[string]string{"probe": probeBin(t, "v1"), "probe2": probeBin(t, "v2")})
	reload := func(cfg string) {
		t.Helper()
		if err := os.WriteFile(tk.cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := tk.ctl("reload-config"); !r.OK {
			t.Fatalf("reload-config: %s", r.Error)
		}
	}
	ask := func(addr string) (string, error) {
		q := new(dns.Msg)
		q.SetQuestion("x.example.", dns.TypeTXT)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, addr)
		if err != nil {
			return "", err
		}
		if len(r.Answer) != 1 {
			return "", fmt.Errorf("answer %v", r)
		}
		return r.Answer[0].(*dns.TXT).Txt[0], nil
	}
	withDNS := func(plugin string) string {
		return base + `
[[listeners]]
name = "dns"
protocol = "dns"
address = "127.0.0.1:0"
plugin = "` + plugin + `"
`
	}
	reload(withDNS("probe"))
	addr := tk.dnsAddr("dns")
	if txt, err := ask(addr); err != nil || !strings.HasPrefix(txt, "probe v1 ") {
		t.Fatalf("after adding: %q %v", txt, err)
	}
	reload(withDNS("probe2"))
	if got := tk.dnsAddr("dns"); got != addr {
		t.Errorf("re-routing moved the listener from %s to %s", addr, got)
	}
	if txt, err := ask(addr); err != nil || !strings.HasPrefix(txt, "probe v2 ") {
		t.Fatalf("after re-routing: %q %v", txt, err)
	}
	reload(base)
	// A removed listener stops gracefully in the background; then both
	// its ports are free.
	free := func(network string) error {
		if network == "udp" {
			pc, err := net.ListenPacket("udp", addr)
			if err == nil {
				pc.Close()
			}
			return err
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
		}
		return err
	}
	testutil.WaitFor(t, 10*time.Second, "the removed listener's UDP and TCP ports to be free", func() bool {
		return free("udp") == nil && free("tcp") == nil
	})
}

func zoneBin(t testing.TB, version string) string {
	return bins.Build(t, "zone-"+version, "./plugins/zone", version)
}

// exampleZone copies the example zone next to the test's config, where
// the zone plugin (which runs in the config's directory) finds it as
// "example.zone".
func exampleZone(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("../plugins/zone/example.zone")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "example.zone"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startZone runs the zone plugin with the example zone on a DNS listener.
func startZone(t *testing.T, bin string) *testKernel {
	t.Helper()
	return startKernelWith(t, dnsConfig("zone", "[plugins.zone.settings]\nfile = \"example.zone\""),
		map[string]string{"zone": bin}, func(k *Kernel) { exampleZone(t, k.baseDir) })
}

// TestZoneWithDig asks the zone plugin through the kernel with dig, over
// UDP and TCP: every record type, a CNAME chain, NXDOMAIN, NODATA,
// REFUSED, and a TXT set that UDP truncates and TCP carries whole.
func TestZoneWithDig(t *testing.T) {
	dig := requireDig(t)
	tk := startZone(t, zoneBin(t, "v1"))
	addr := tk.dnsAddr("dns")
	tests := []struct {
		name, qname, qtype string
		status             string   // dig's status: NOERROR, NXDOMAIN, REFUSED
		answers            []string // substrings of the answer section, in order
		authority          string   // a substring of the authority section
		flags              string   // a substring of dig's flags line
	}{
		{name: "A", qname: "www.example.test", qtype: "A", status: "NOERROR", answers: []string{"192.0.2.10"}, flags: " aa"},
		{name: "AAAA", qname: "www.example.test", qtype: "AAAA", status: "NOERROR", answers: []string{"2001:db8::10"}},
		{name: "CNAME chain", qname: "alias.example.test", qtype: "A", status: "NOERROR",
			answers: []string{"CNAME\talias2.example.test.", "CNAME\twww.example.test.", "A\t192.0.2.10"}},
		{name: "MX", qname: "example.test", qtype: "MX", status: "NOERROR", answers: []string{"10 mail.example.test."}},
		{name: "NS", qname: "example.test", qtype: "NS", status: "NOERROR", answers: []string{"ns1.example.test."}},
		{name: "SOA", qname: "example.test", qtype: "SOA", status: "NOERROR", answers: []string{"hostmaster.example.test. 2024010101"}},
		{name: "TXT", qname: "txt.example.test", qtype: "TXT", status: "NOERROR", answers: []string{`"hello world" "second string"`}},
		{name: "SRV", qname: "_sip._tcp.example.test", qtype: "SRV", status: "NOERROR", answers: []string{"10 60 5060 sip.example.test."}},
		{name: "PTR", qname: "10.2.0.192.rev.example.test", qtype: "PTR", status: "NOERROR", answers: []string{"www.example.test."}},
		{name: "wildcard", qname: "anything.wild.example.test", qtype: "A", status: "NOERROR", answers: []string{"anything.wild.example.test.", "192.0.2.99"}},
		{name: "NXDOMAIN", qname: "nope.example.test", qtype: "A", status: "NXDOMAIN", authority: "SOA"},
		{name: "NODATA", qname: "www.example.test", qtype: "MX", status: "NOERROR", authority: "SOA"},
		{name: "empty non-terminal", qname: "b.deep.example.test", qtype: "A", status: "NOERROR", authority: "SOA"},
		{name: "REFUSED", qname: "www.example.org", qtype: "A", status: "REFUSED"},
	}
	for _, tt := range tests {
		for _, transport := range []string{"+notcp", "+tcp"} {
			t.Run(tt.name+" "+transport, func(t *testing.T) {
				out, err := exec.Command(dig, digArgs(addr, transport, "+nocmd", "+noquestion", "+nostats", tt.qname, tt.qtype)...).CombinedOutput()
				text := string(out)
				if err != nil || !strings.Contains(text, "status: "+tt.status) {
					t.Fatalf("%v\n%s", err, text)
				}
				answer, authority := sections(text)
				at := 0
				for _, a := range tt.answers {
					i := strings.Index(answer[at:], a)
					if i < 0 {
						t.Fatalf("answer lacks %q after position %d:\n%s", a, at, text)
					}
					at += i + len(a)
				}
				if len(tt.answers) == 0 && answer != "" {
					t.Errorf("answer section not empty:\n%s", text)
				}
				if !strings.Contains(authority, tt.authority) {
					t.Errorf("authority lacks %q:\n%s", tt.authority, text)
				}
				if tt.flags != "" && !strings.Contains(text, tt.flags) {
					t.Errorf("flags lack %q:\n%s", tt.flags, text)
				}
			})
		}
	}

	t.Run("big TXT: truncated over UDP, whole over TCP", func(t *testing.T) {
		out, err := exec.Command(dig, digArgs(addr, "+notcp", "+ignore", "+bufsize=1232", "big.example.test", "TXT")...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), " tc") {
			t.Errorf("UDP answer not truncated: %v\n%s", err, out)
		}
		out, err = exec.Command(dig, digArgs(addr, "+tcp", "+short", "big.example.test", "TXT")...).CombinedOutput()
		if n := strings.Count(string(out), "\n"); err != nil || n != 60 {
			t.Errorf("TCP answer: %d records, %v", n, err)
		}
		// dig on its own retries a truncated answer over TCP.
		out, err = exec.Command(dig, digArgs(addr, "+short", "big.example.test", "TXT")...).CombinedOutput()
		if n := strings.Count(string(out), "\n"); err != nil || n != 60 {
			t.Errorf("UDP then TCP: %d records, %v\n%.300s", n, err, out)
		}
	})
}

// sections returns dig's answer and authority sections.
func sections(out string) (answer, authority string) {
	part := func(name string) string {
		_, rest, ok := strings.Cut(out, ";; "+name+" SECTION:\n")
		if !ok {
			return ""
		}
		body, _, _ := strings.Cut(rest, "\n\n")
		return body
	}
	return part("ANSWER"), part("AUTHORITY")
}

// TestZoneSwapUnderLoad queries the zone plugin at a high rate over UDP and
// TCP while it is swapped ten times: no query is lost or answered with
// SERVFAIL.
func TestZoneSwapUnderLoad(t *testing.T) {
	bin := map[string]string{}
	for _, v := range []string{"v1", "v2", "v3"} {
		bin[v] = zoneBin(t, v)
	}
	tk := startZone(t, bin["v1"])
	res := swapDNSUnderLoad(t, tk, "zone", bin, func(int, int) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion("www.example.test.", dns.TypeA)
		return q
	}, func(r *dns.Msg) (string, bool) { return "", len(r.Answer) == 1 })
	if res.fails != 0 {
		t.Errorf("%d of %d queries lost or failed during 10 swaps; first: %v", res.fails, res.fails+res.ok, res.errs)
	}
	t.Logf("%d queries to the zone plugin over UDP and TCP during 10 swaps, %d lost or failed", res.ok, res.fails)
}

// TestZoneBrokenKeepsOld: a config reload that points the zone plugin at a
// broken zone file is refused, and the old version keeps answering.
func TestZoneBrokenKeepsOld(t *testing.T) {
	tk := startZone(t, zoneBin(t, "v1"))
	addr := tk.dnsAddr("dns")
	answers := func() bool {
		q := new(dns.Msg)
		q.SetQuestion("www.example.test.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, addr)
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
	}
	broken := filepath.Join(tk.dir, "broken.zone")
	if err := os.WriteFile(broken, []byte("$ORIGIN example.test.\nwww IN A not-an-address\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := dnsConfig("zone", "[plugins.zone.settings]\nfile = \"broken.zone\"")
	if err := os.WriteFile(tk.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := tk.ctl("reload-config")
	if r.OK || !strings.Contains(r.Error, "broken.zone") {
		t.Errorf("reload-config with a broken zone: %+v %s", r, r.Data)
	}
	if p := tk.plugin("zone"); p.Generation != 1 || !answers() {
		t.Errorf("after the refused reload: %+v, answers %v", p, answers())
	}
}
