package kernel

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

const chaosConfig = `
[plugins.probe]
path = "plugins/probe"
start_timeout = "10s"
call_timeout = "5s"
drain_timeout = "5s"

[plugins.hello]
path = "plugins/hello"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "dns"
protocol = "dns"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "lines"
protocol = "line"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "hello"
protocol = "http"
address = "127.0.0.1:0"
plugin = "hello"
`

// chaosCount tallies one kind of client's outcomes.
type chaosCount struct {
	name     string
	ok, fail atomic.Int64
	mu       sync.Mutex
	why      map[string]int64
}

func (c *chaosCount) failed(reason string) {
	c.fail.Add(1)
	c.mu.Lock()
	if c.why == nil {
		c.why = map[string]int64{}
	}
	c.why[reason]++
	c.mu.Unlock()
}

func (c *chaosCount) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%s: %d ok, %d failed %v", c.name, c.ok.Load(), c.fail.Load(), c.why)
}

// reason shortens an error or answer to a class worth counting.
func reason(s string) string {
	for _, k := range []string{"502", "503", "504", "SERVFAIL", "ERR probe unavailable", "timeout", "refused", "reset", "EOF"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// TestChaos loads HTTP, DNS and line listeners of the probe plugin, and an
// HTTP listener of another plugin, while the probe's processes are killed
// at random for 30 s: SIGKILL, or SIGSTOP and SIGCONT a moment later.
// Every listener keeps accepting throughout; failures are bounded by the
// requests in flight at the kills (each client has at most one); the other
// plugin sees none; and once the chaos ends every request succeeds again.
func TestChaos(t *testing.T) {
	chaos := 30 * time.Second
	if testing.Short() {
		chaos = 5 * time.Second
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	tk := startKernel(t, chaosConfig, map[string]string{"probe": probeBin(t, "v1"), "hello": helloBin(t, "v1")})

	const httpClients, dnsClients, lineClients, helloClients = 4, 4, 8, 2
	counts := map[string]*chaosCount{
		"http": {name: "http"}, "dns": {name: "dns"}, "line": {name: "line"}, "hello": {name: "hello (other plugin)"},
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	httpLoop := func(url, prefix string, c *chaosCount) {
		defer wg.Done()
		tr := &http.Transport{MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
		for ctx.Err() == nil {
			code, body, err := get(cl, url)
			switch {
			case err != nil:
				c.failed(reason(err.Error()))
			case code != http.StatusOK || !strings.HasPrefix(body, prefix):
				c.failed(reason(fmt.Sprint(code, " ", body)))
			default:
				c.ok.Add(1)
			}
		}
	}
	for range httpClients {
		wg.Add(1)
		go httpLoop(tk.url("web")+"/", "probe ", counts["http"])
	}
	for range helloClients {
		wg.Add(1)
		go httpLoop(tk.url("hello")+"/", "hello from ", counts["hello"])
	}
	for i := range dnsClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &dns.Client{Net: []string{"udp", "tcp"}[i%2], Timeout: 10 * time.Second}
			for n := 0; ctx.Err() == nil; n++ {
				q := new(dns.Msg)
				q.SetQuestion(fmt.Sprintf("c%d-%d.chaos.", i, n), dns.TypeTXT)
				r, _, err := cl.Exchange(q, tk.bound("dns"))
				switch {
				case err != nil:
					counts["dns"].failed(reason(err.Error()))
				case r.Rcode != dns.RcodeSuccess:
					counts["dns"].failed(dns.RcodeToString[r.Rcode])
				default:
					counts["dns"].ok.Add(1)
				}
			}
		}()
	}
	for i := range lineClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := dialLine(t, tk.bound("lines"))
			if _, err := lc.readLine(); err != nil {
				counts["line"].failed("greeting: " + reason(err.Error()))
				return
			}
			// A line the plugin could not answer leaves the session's
			// count where it was: the next answer carries the same number.
			want := 1
			for n := 0; ctx.Err() == nil; n++ {
				line := fmt.Sprintf("c%d l%d", i, n)
				if err := lc.send(line); err != nil {
					counts["line"].failed("connection dropped: " + reason(err.Error()))
					return
				}
				got, err := lc.readLine()
				if err != nil {
					counts["line"].failed("connection dropped: " + reason(err.Error()))
					return
				}
				if got == "ERR probe unavailable" {
					counts["line"].failed(got)
					continue
				}
				if gotN, _, _, text, ok := probeLine(got); !ok || gotN != want || text != line {
					counts["line"].failed(fmt.Sprintf("session state lost: want #%d, got %q", want, got))
					return
				}
				want++
				counts["line"].ok.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	testutil.WaitFor(t, 30*time.Second, "load on every listener", func() bool {
		for _, c := range counts {
			if c.ok.Load() < 20 {
				return false
			}
		}
		return true
	})
	var kills, stops int
	deadline := time.Now().Add(chaos)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		pid := tk.plugin("probe").PID
		if pid == 0 {
			continue // restarting
		}
		if rng.IntN(10) < 6 {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				kills++
			}
			continue
		}
		if syscall.Kill(pid, syscall.SIGSTOP) == nil {
			stops++
			time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	// After the chaos: everything answers again, and keeps answering. The
	// calls in flight at the last kill end with it; let them.
	time.Sleep(time.Second)
	testutil.WaitFor(t, 30*time.Second, "the plugin serving", func() bool { return tk.plugin("probe").State == stateServing })
	failedAtEnd := map[string]int64{}
	for k, c := range counts {
		failedAtEnd[k] = c.fail.Load()
	}
	okAtEnd := map[string]int64{}
	for k, c := range counts {
		okAtEnd[k] = c.ok.Load()
	}
	testutil.WaitFor(t, 30*time.Second, "traffic after the chaos", func() bool {
		for k, c := range counts {
			if c.ok.Load() < okAtEnd[k]+50 {
				return false
			}
		}
		return true
	})
	stop()
	wg.Wait()

	p := tk.plugin("probe")
	t.Logf("chaos %v: %d SIGKILLs, %d SIGSTOP/SIGCONTs; probe restarts %d, generation %d", chaos, kills, stops, p.Restarts, p.Generation)
	var total, failed int64
	for _, k := range []string{"http", "dns", "line", "hello"} {
		c := counts[k]
		t.Log(c)
		total += c.ok.Load() + c.fail.Load()
		failed += c.fail.Load()
	}
	t.Logf("requests %d, failed %d", total, failed)
	for k, c := range counts {
		if n := c.fail.Load() - failedAtEnd[k]; n > 0 {
			t.Errorf("%s: %d failures after the chaos ended", k, n)
		}
	}
	if n := counts["hello"].fail.Load(); n > 0 {
		t.Errorf("the other plugin failed %d requests: %s", n, counts["hello"])
	}
	// Each client has one call in flight at a time. A kill fails the one
	// in the process, and at most one more sent in the moment before the
	// kernel saw the process's streams break; a SIGSTOP shorter than
	// call_timeout fails none.
	if bound := int64(2 * kills * (httpClients + dnsClients + lineClients)); failed > bound {
		t.Errorf("%d failures for %d kills of a plugin with %d clients: more than the calls in flight could be", failed, kills, httpClients+dnsClients+lineClients)
	}
	for _, c := range counts {
		if strings.Contains(c.String(), "connection dropped") || strings.Contains(c.String(), "state lost") {
			t.Errorf("a line session did not survive: %s", c)
		}
	}
	if p.Quarantined != "" {
		t.Errorf("killed from outside, the plugin was quarantined: %+v", p)
	}
}
