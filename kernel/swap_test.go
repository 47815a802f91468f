package kernel

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// probeConfig is a kernel with the probe plugin on one HTTP listener.
func probeConfig(startTimeout string) string {
	if startTimeout == "" {
		startTimeout = "10s"
	}
	return `
[plugins.probe]
path = "plugins/probe"
start_timeout = "` + startTimeout + `"
drain_timeout = "20s"
call_timeout = "20s"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`
}

// buildVersions builds probe at each version, in parallel.
func buildVersions(t *testing.T, versions ...string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, v := range versions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := bins.BuildE("probe-"+v, "./plugins/probe", v)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			out[v] = p
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// load runs n keep-alive clients against url until stop, counting answers
// by the pid that gave them and every failure.
type load struct {
	ok       atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	byPid    map[int]int64
	errs     []string
	wg       sync.WaitGroup
	stop     context.CancelFunc
}

func startLoad(n int, url string) *load {
	ctx, stop := context.WithCancel(context.Background())
	l := &load{byPid: make(map[int]int64), stop: stop}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for ctx.Err() == nil {
				code, body, err := get(c, url)
				if err != nil || code != http.StatusOK || !strings.HasPrefix(body, "probe ") {
					l.failures.Add(1)
					l.mu.Lock()
					if len(l.errs) < 20 {
						l.errs = append(l.errs, fmt.Sprintf("%d %q %v", code, body, err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
				pid := probePid(body)
				l.mu.Lock()
				l.byPid[pid]++
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) finish() {
	l.stop()
	l.wg.Wait()
}

func (l *load) answered(pid int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byPid[pid]
}

// TestSwapUnderLoad replaces the plugin's executable ten times, alternately
// by rename and by rewriting it in place, while eight keep-alive clients
// hammer the listener. No request may fail, every generation must answer,
// and a request held in flight across each swap must complete on the
// version it started on.
func TestSwapUnderLoad(t *testing.T) {
	versions := []string{"v1", "v2", "v3"}
	bin := buildVersions(t, versions...)
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": bin["v1"]})
	base := tk.url("web")
	exe := filepath.Join(tk.dir, "plugins", "probe")

	l := startLoad(8, base+"/")
	defer l.finish()
	slowClient := &http.Client{Timeout: 60 * time.Second}

	pids := map[uint64]int{1: tk.plugin("probe").PID}
	var swapTimes []time.Duration
	for i := 1; i <= 10; i++ {
		before := tk.plugin("probe")
		next := versions[i%len(versions)]
		inPlace := i%2 == 0

		type answer struct {
			code int
			body string
			err  error
		}
		slow := make(chan answer, 1)
		release := filepath.Join(tk.dir, fmt.Sprintf("release-%d", i))
		go func() {
			code, body, err := get(slowClient, base+"/wait?file="+release)
			slow <- answer{code, body, err}
		}()
		// Let the slow request reach the plugin before the swap starts.
		testutil.WaitFor(t, 5*time.Second, "the slow request to be in flight", func() bool {
			return tk.plugin("probe").Inflight > 0
		})
		time.Sleep(50 * time.Millisecond)

		t0 := time.Now()
		replace(t, bin[next], exe, inPlace)
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("generation %d", before.Generation+1), func() bool {
			return tk.plugin("probe").Generation == before.Generation+1
		})
		swapTimes = append(swapTimes, time.Since(t0))
		after := tk.plugin("probe")
		if after.Version != next {
			t.Errorf("swap %d: version %q, want %q", i, after.Version, next)
		}
		pids[after.Generation] = after.PID
		// The held request is still in the old process; release it.
		if err := os.WriteFile(release, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		a := <-slow
		if a.err != nil || a.code != http.StatusOK {
			t.Fatalf("swap %d: slow request across the swap: %d %q %v", i, a.code, a.body, a.err)
		}
		if got := probePid(a.body); got != before.PID {
			t.Errorf("swap %d: slow request answered by pid %d, want the old pid %d (%q)", i, got, before.PID, a.body)
		}
		// Let the new generation take some load before the next swap.
		testutil.WaitFor(t, 10*time.Second, "the new generation to answer", func() bool {
			return l.answered(after.PID) > 0
		})
	}
	l.finish()

	if n := l.failures.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during swaps; first: %v", n, n+l.ok.Load(), l.errs)
	}
	for gen, pid := range pids {
		if l.answered(pid) == 0 {
			t.Errorf("generation %d (pid %d) never answered", gen, pid)
		}
	}
	p := tk.plugin("probe")
	if p.Generation != 11 || p.Restarts != 0 {
		t.Errorf("after 10 swaps: generation %d restarts %d, want 11 and 0", p.Generation, p.Restarts)
	}
	t.Logf("%d requests, 0 failed; file change to new generation serving: %v", l.ok.Load(), swapTimes)
	// The old generations are drained and stopped.
	testutil.WaitFor(t, 30*time.Second, "old generations to stop", func() bool {
		for gen, pid := range pids {
			if gen != p.Generation && testutil.Alive(pid) {
				return false
			}
		}
		return true
	})
	snaps, _ := os.ReadDir(filepath.Join(tk.dir, "state", "plugins"))
	if len(snaps) > keepSnapshots {
		t.Errorf("%d snapshots kept, want at most %d", len(snaps), keepSnapshots)
	}
}
