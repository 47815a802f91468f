package kernel

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
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

// faultConfig is probe on an HTTP listener with extra plugin keys.
func faultConfig(pluginKeys string) string {
	return `
[plugins.probe]
path = "plugins/probe"
start_timeout = "10s"
drain_timeout = "5s"
` + pluginKeys + `

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`
}

func status(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	code, _, err := get(c, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return code
}

// TestHungCallsRestart: a handler that never returns and ignores its
// context gets 504 at call_timeout; once hung_calls calls in a row have
// timed out, the process is restarted and the next request is answered.
func TestHungCallsRestart(t *testing.T) {
	tk := startKernel(t, faultConfig("call_timeout = \"300ms\"\nhung_calls = 3\n"), map[string]string{"probe": probeBin(t, "v1")})
	c := &http.Client{Timeout: 10 * time.Second}
	url := tk.url("web")
	before := tk.plugin("probe")
	for i := range 3 {
		if code := status(t, c, url+"/hang"); code != http.StatusGatewayTimeout {
			t.Fatalf("hang %d: %d, want 504", i, code)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "a restart", func() bool {
		p := tk.plugin("probe")
		return p.Restarts == 1 && p.State == stateServing && p.PID != before.PID
	})
	if got := probePid(mustGet(t, c, url+"/")); got == before.PID || got == 0 {
		t.Fatalf("answered by pid %d after the restart", got)
	}
	if p := tk.plugin("probe"); !strings.Contains(p.LastError, "calls in a row timed out") || p.Quarantined != "" {
		t.Fatalf("after the hung restart: %+v", p)
	}
}

// TestQuarantine: a plugin whose processes keep dying young is not
// restarted after quarantine_after deaths; calls fail at once with 503 and
// `ctl plugins` says why. `ctl reload` forces it back, and so does a new
// file.
func TestQuarantine(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	tk := startKernel(t, faultConfig("quarantine_after = 3\n"), map[string]string{"probe": bin["v1"]})
	c := &http.Client{Timeout: 10 * time.Second}
	url := tk.url("web")
	for i := range 3 {
		testutil.WaitFor(t, 20*time.Second, "serving", func() bool { return tk.plugin("probe").State == stateServing })
		if code := status(t, c, url+"/crash"); code != http.StatusBadGateway {
			t.Fatalf("crash %d: %d, want 502", i, code)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "quarantine", func() bool { return tk.plugin("probe").Quarantined != "" })
	p := tk.plugin("probe")
	if p.State != stateFailed || p.PID != 0 || !strings.Contains(p.LastError, "quarantined") || p.NextRestart != "" {
		t.Fatalf("quarantined slot: %+v", p)
	}
	t0 := time.Now()
	if code := status(t, c, url+"/"); code != http.StatusServiceUnavailable {
		t.Fatalf("a call to a quarantined plugin: %d, want 503", code)
	}
	if d := time.Since(t0); d > restartWait {
		t.Fatalf("a call to a quarantined plugin waited %v", d)
	}
	// It stays down: no restart comes.
	time.Sleep(time.Second)
	if p := tk.plugin("probe"); p.State != stateFailed || p.Restarts != 3 {
		t.Fatalf("restarted while quarantined: %+v", p)
	}
	if r := tk.ctl("reload probe"); !r.OK {
		t.Fatalf("ctl reload of a quarantined plugin: %s", r.Error)
	}
	if p := tk.plugin("probe"); p.State != stateServing || p.Quarantined != "" {
		t.Fatalf("after ctl reload: %+v", p)
	}
	mustGet(t, c, url+"/")

	// Quarantined again, then a new file brings it back by itself.
	for range 3 {
		testutil.WaitFor(t, 20*time.Second, "serving", func() bool { return tk.plugin("probe").State == stateServing })
		status(t, c, url+"/crash")
	}
	testutil.WaitFor(t, 20*time.Second, "quarantine", func() bool { return tk.plugin("probe").Quarantined != "" })
	replace(t, bin["v2"], filepath.Join(tk.dir, "plugins", "probe"), false)
	testutil.WaitFor(t, 20*time.Second, "v2 serving", func() bool {
		p := tk.plugin("probe")
		return p.State == stateServing && p.Version == "v2"
	})
}

// TestQuarantineAtStart: an executable that exits at every start is
// quarantined, and a good file replaces it.
func TestQuarantineAtStart(t *testing.T) {
	tk := startKernel(t, faultConfig("quarantine_after = 3\n"), map[string]string{"probe": testdataBin(t, "exit1")})
	testutil.WaitFor(t, 30*time.Second, "quarantine", func() bool { return tk.plugin("probe").Quarantined != "" })
	if p := tk.plugin("probe"); p.State != stateFailed || !strings.Contains(p.LastError, "exit status 1") {
		t.Fatalf("quarantined at start: %+v", p)
	}
	replace(t, probeBin(t, "v1"), filepath.Join(tk.dir, "plugins", "probe"), false)
	testutil.WaitFor(t, 20*time.Second, "v1 serving", func() bool { return tk.plugin("probe").State == stateServing })
}

// TestRollback swaps in a version that answers 500 to everything while
// eight clients load the plugin: the kernel swaps back to the previous
// executable within the rollback window, says why, and does not try the
// bad file again; once rolled back, every request succeeds.
func TestRollback(t *testing.T) {
	bin := buildVersions(t, "v1", "broken-v2")
	tk := startKernel(t, faultConfig("rollback_window = \"20s\"\n"), map[string]string{"probe": bin["v1"]})
	url := tk.url("web") + "/"
	l := startLoad(8, url)
	defer l.finish()
	testutil.WaitFor(t, 20*time.Second, "load", func() bool { return l.ok.Load() > 200 })
	t0 := time.Now()
	replace(t, bin["broken-v2"], filepath.Join(tk.dir, "plugins", "probe"), false)
	testutil.WaitFor(t, 20*time.Second, "the rollback", func() bool { return tk.plugin("probe").Rollbacks == 1 })
	took := time.Since(t0)
	p := tk.plugin("probe")
	if p.Version != "v1" || p.Generation != 3 || !strings.Contains(p.LastError, "rolled back") || !strings.Contains(p.LastError, "error rate") {
		t.Fatalf("after the rollback: %+v", p)
	}
	// Requests in flight in the broken version when it was rolled back
	// still fail; once it has drained, none does.
	testutil.WaitFor(t, 20*time.Second, "the broken version to drain", func() bool { return len(tk.plugin("probe").Draining) == 0 })
	failedDuring := l.failures.Load()
	okBefore := l.ok.Load()
	testutil.WaitFor(t, 20*time.Second, "answers after the rollback", func() bool { return l.ok.Load() > okBefore+500 })
	l.finish()
	if extra := l.failures.Load() - failedDuring; extra != 0 {
		t.Fatalf("%d failures after the rollback: %v", extra, l.errs)
	}
	t.Logf("rolled back %v after the rename; %d requests failed on the broken version, %d answered in all", took.Round(time.Millisecond), failedDuring, l.ok.Load())
	// The bad file is still in place; the watcher does not swap it in again.
	time.Sleep(time.Second)
	if p := tk.plugin("probe"); p.Generation != 3 || p.Version != "v1" {
		t.Fatalf("the bad file came back: %+v", p)
	}
}

// TestSHA256Pin: a pinned plugin runs only the executable whose hash it
// names; a replacement that does not match is refused and the pinned one
// keeps serving.
func TestSHA256Pin(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	sum := fileSHA256(t, bin["v1"])
	tk := startKernel(t, faultConfig(fmt.Sprintf("sha256 = %q\n", strings.ToUpper(sum))), map[string]string{"probe": bin["v1"]})
	if p := tk.plugin("probe"); p.State != stateServing || p.SHA256 != sum {
		t.Fatalf("pinned start: %+v", p)
	}
	replace(t, bin["v2"], filepath.Join(tk.dir, "plugins", "probe"), false)
	testutil.WaitFor(t, 20*time.Second, "the refusal", func() bool {
		return strings.Contains(tk.plugin("probe").LastError, "does not match its sha256 pin")
	})
	if p := tk.plugin("probe"); p.Version != "v1" || p.Generation != 1 {
		t.Fatalf("after a refused replacement: %+v", p)
	}
	mustGet(t, &http.Client{Timeout: 10 * time.Second}, tk.url("web")+"/")
	if r := tk.ctl("reload probe"); r.OK || !strings.Contains(r.Error, "sha256 pin") {
		t.Fatalf("ctl reload of a mismatching file: %+v", r)
	}
}

// TestMemoryRecycle: a process that grows past max_memory is replaced by a
// fresh one of the same executable, gracefully: every request is answered.
func TestMemoryRecycle(t *testing.T) {
	tk := startKernel(t, faultConfig("max_memory = 209715200\n"), map[string]string{"probe": probeBin(t, "v1")})
	c := &http.Client{Timeout: 10 * time.Second}
	url := tk.url("web")
	before := tk.plugin("probe")
	l := startLoad(4, url+"/")
	defer l.finish()
	if body := mustGet(t, c, url+"/grow?mb=300"); !strings.Contains(body, "holds 300 MiB") {
		t.Fatalf("grow: %q", body)
	}
	testutil.WaitFor(t, 30*time.Second, "the recycle", func() bool {
		p := tk.plugin("probe")
		return p.Generation == 2 && p.PID != before.PID
	})
	n := l.ok.Load()
	testutil.WaitFor(t, 20*time.Second, "answers after", func() bool { return l.ok.Load() > n+100 })
	l.finish()
	if f := l.failures.Load(); f != 0 {
		t.Fatalf("%d failures across the recycle: %v", f, l.errs)
	}
	if p := tk.plugin("probe"); !strings.Contains(p.LastError, "max_memory") {
		t.Fatalf("last_error %q", p.LastError)
	}
}

// TestPluginGarbageAndFlood: a plugin that writes megabytes of binary junk
// to stdout and floods its log does not stop the kernel serving; its log is
// rate-limited and the drops are counted.
func TestPluginGarbageAndFlood(t *testing.T) {
	tk := startKernel(t, faultConfig("call_timeout = \"60s\"\n"), map[string]string{"probe": probeBin(t, "v1")})
	c := &http.Client{Timeout: 90 * time.Second}
	url := tk.url("web")
	mustGet(t, c, url+"/garbage?bytes=4000000")
	mustGet(t, c, url+"/flood?lines=12000")
	testutil.WaitFor(t, 20*time.Second, "the drop report", func() bool {
		mustGet(t, c, url+"/")
		return tk.logs.contains("records dropped")
	})
	if p := tk.plugin("probe"); p.Restarts != 0 || p.State != stateServing {
		t.Fatalf("after garbage and a flood: %+v", p)
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestClientGoneEndsCall: a client that hangs up while its request is in
// the plugin ends the call at once — not at call_timeout, nor when the
// handler would have finished — and the plugin keeps serving.
func TestClientGoneEndsCall(t *testing.T) {
	tk := startKernel(t, faultConfig("call_timeout = \"60s\"\n"), map[string]string{"probe": probeBin(t, "v1")})
	conn, err := net.Dial("tcp", tk.bound("web"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /slow?ms=60000 HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the call in flight", func() bool {
		return tk.plugin("probe").Inflight == 1
	})
	t0 := time.Now()
	conn.Close()
	testutil.WaitFor(t, 10*time.Second, "the call to end", func() bool {
		return tk.plugin("probe").Inflight == 0
	})
	t.Logf("the call ended %v after the client hung up", time.Since(t0).Round(time.Millisecond))
	c := &http.Client{Timeout: 10 * time.Second}
	if code := status(t, c, tk.url("web")+"/"); code != http.StatusOK {
		t.Fatalf("after the hang-up: %d", code)
	}
	if p := tk.plugin("probe"); p.Errors != 0 || p.Restarts != 0 {
		t.Errorf("a client hanging up counted against the plugin: %+v", p)
	}
}

// TestCallFailureLogLimit: a plugin failing every request of a flood does
// not make the kernel log every failure: past a burst of callLogBurst, at
// most callLogRate records a second pass, and the dropped ones are counted
// in reports. ctl plugins still counts every failure.
func TestCallFailureLogLimit(t *testing.T) {
	tk := startKernel(t, faultConfig(""), map[string]string{"probe": probeBin(t, "v1")})
	// The handler sends its head and then panics: the kernel cuts the
	// response off and logs it, for every request.
	url := tk.url("web") + "/panic?after=head"
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	const clients, each = 16, 150 // 2,400 failures: over the burst of 1,000
	t0 := time.Now()
	var wg sync.WaitGroup
	var cut atomic.Int64
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, _, err := get(c, url); err != nil {
					cut.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	if n := cut.Load(); n != clients*each {
		t.Fatalf("%d of %d responses were cut off", n, clients*each)
	}
	logged := len(tk.logLines("\"response cut off\""))
	allowed := callLogBurst + int(took.Seconds()*callLogRate) + 1
	t.Logf("%d failures in %v: %d logged (at most %d allowed)", clients*each, took.Round(time.Millisecond), logged, allowed)
	if logged > allowed {
		t.Errorf("%d failures logged in %v, more than the limit allows (%d)", logged, took, allowed)
	}
	if clients*each <= allowed {
		t.Fatalf("the flood (%d in %v) was too slow to reach the limit; the test tested nothing", clients*each, took)
	}
	// The next failure that passes reports the last drops. Every failure
	// is either logged or counted in a report.
	time.Sleep(50 * time.Millisecond)
	if _, _, err := get(c, url); err == nil {
		t.Fatal("after the flood: the response was not cut off")
	}
	dropped := 0
	for _, l := range tk.logLines("\"call failures over the log's rate limit: records dropped\"") {
		var n int
		if _, err := fmt.Sscanf(l[strings.Index(l, " dropped=")+1:], "dropped=%d", &n); err != nil {
			t.Fatalf("report %q: %v", l, err)
		}
		dropped += n
	}
	if logged := len(tk.logLines("\"response cut off\"")); logged+dropped != clients*each+1 {
		t.Errorf("%d failures logged and %d reported dropped, want %d in all", logged, dropped, clients*each+1)
	}
	if p := tk.plugin("probe"); p.Errors < clients*each {
		t.Errorf("ctl plugins counts %d errors, want at least %d", p.Errors, clients*each)
	}
}
