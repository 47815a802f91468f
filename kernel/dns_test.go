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
func (tk *testKernel) dnsAddr(listener string) string {
	for _, l := range tk.k.Listeners() {
		if l.Name == listener {
			return l.Bound
		}
	}
	tk.t.Fatalf("no listener %q", listener)
	return ""
}

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

// TestDNSSwapUnderLoad queries at a high rate over UDP and TCP while the
// plugin is swapped ten times: every query is answered, none with SERVFAIL.
func TestDNSSwapUnderLoad(t *testing.T) {
	bin := buildVersions(t, "v1", "v2", "v3")
	tk := startKernel(t, dnsConfig("probe", ""), map[string]string{"probe": bin["v1"]})
	addr := tk.dnsAddr("dns")
	exe := filepath.Join(tk.dir, "plugins", "probe")

	ctx, stop := context.WithCancel(context.Background())
	var (
		wg        sync.WaitGroup
		ok, fails atomic.Int64
		mu        sync.Mutex
		errs      []string
		versions  = map[string]int64{}
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
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("q%d-%d.example.", i, n), dns.TypeTXT)
				r, _, err := c.Exchange(q, addr)
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					fails.Add(1)
					mu.Lock()
					if len(errs) < 10 {
						errs = append(errs, fmt.Sprintf("%s: %v %v", c.Net, r, err))
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
				txt := r.Answer[0].(*dns.TXT).Txt[0]
				mu.Lock()
				versions[strings.Fields(txt)[1]]++
				mu.Unlock()
			}
		}()
	}
	for i := 1; i <= 10; i++ {
		before := tk.plugin("probe")
		next := []string{"v1", "v2", "v3"}[i%3]
		replace(t, bin[next], exe, i%2 == 0)
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("generation %d", before.Generation+1), func() bool {
			return tk.plugin("probe").Generation == before.Generation+1
		})
		n := ok.Load()
		testutil.WaitFor(t, 20*time.Second, "answers after the swap", func() bool { return ok.Load() > n+100 })
	}
	stop()
	wg.Wait()
	if n := fails.Load(); n != 0 {
		t.Errorf("%d of %d queries failed during 10 swaps; first: %v", n, n+ok.Load(), errs)
	}
	if len(versions) != 3 {
		t.Errorf("answers by version: %v", versions)
	}
	t.Logf("%d queries over UDP and TCP during 10 swaps, %d failed; by version %v", ok.Load(), fails.Load(), versions)
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
	for _, network := range []string{"udp", "tcp"} {
		var err error
		if network == "udp" {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", addr); err == nil {
				pc.Close()
			}
		} else {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err == nil {
				ln.Close()
			}
		}
		if err != nil {
			t.Errorf("%s port still bound after the listener was removed: %v", network, err)
		}
	}
}
