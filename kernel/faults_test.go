package kernel

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// installText installs an executable file holding text at dst by rename.
func installText(t *testing.T, dst, text string) {
	t.Helper()
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// TestBrokenReplacement replaces a serving plugin with executables that
// cannot serve. Each leaves the old version serving and sets last_error;
// the next good executable swaps in.
func TestBrokenReplacement(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	cases := []struct {
		name    string
		install func(t *testing.T, dst string)
		errText string
	}{
		{"text file", func(t *testing.T, dst string) {
			installText(t, dst, "echo not a plugin\n")
		}, "not a complete executable"},
		{"script with a missing interpreter", func(t *testing.T, dst string) {
			installText(t, dst, "#!/nonexistent/python3\nprint()\n")
		}, "interpreter"},
		{"script that is no plugin", func(t *testing.T, dst string) {
			installText(t, dst, "#!/bin/sh\necho not a plugin\n")
		}, "Unrecognized remote plugin message"},
		{"truncated executable", func(t *testing.T, dst string) {
			b, err := os.ReadFile(bin["v2"])
			if err != nil {
				t.Fatal(err)
			}
			tmp := dst + ".new"
			if err := os.WriteFile(tmp, b[:len(b)/2], 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, dst); err != nil {
				t.Fatal(err)
			}
		}, "not a complete executable"},
		{"exits at start", func(t *testing.T, dst string) {
			replace(t, testdataBin(t, "exit1"), dst, false)
		}, "exit status 1"},
		{"hangs in handshake", func(t *testing.T, dst string) {
			replace(t, testdataBin(t, "hang"), dst, true)
		}, "timeout"},
		{"garbage handshake", func(t *testing.T, dst string) {
			replace(t, testdataBin(t, "garbage"), dst, false)
		}, "Unrecognized remote plugin message"},
	}
	// Build the test programs before the kernel runs.
	for _, name := range []string{"exit1", "hang", "garbage"} {
		testdataBin(t, name)
	}
	tk := startKernel(t, probeConfig("1s"), map[string]string{"probe": bin["v1"]})
	exe := filepath.Join(tk.dir, "plugins", "probe")
	c := &http.Client{Timeout: 10 * time.Second}
	url := tk.url("web") + "/"
	first := tk.plugin("probe")

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tk.plugin("probe")
			tc.install(t, exe)
			testutil.WaitFor(t, 20*time.Second, "last_error", func() bool {
				return tk.plugin("probe").LastError != ""
			})
			p := tk.plugin("probe")
			if !strings.Contains(p.LastError, tc.errText) {
				t.Errorf("last_error = %q, want it to mention %q", p.LastError, tc.errText)
			}
			if p.Generation != before.Generation || p.PID != before.PID || p.State != stateServing {
				t.Errorf("after a broken replacement: gen %d pid %d state %s; want gen %d pid %d serving",
					p.Generation, p.PID, p.State, before.Generation, before.PID)
			}
			if got := probePid(mustGet(t, c, url)); got != before.PID {
				t.Errorf("answered by pid %d, want the old pid %d", got, before.PID)
			}
			// The same broken file is not retried, and `ctl plugins` shows why.
			r := tk.ctl("plugins")
			if !r.OK || !strings.Contains(string(r.Data), "last_error") {
				t.Errorf("ctl plugins: %+v", r)
			}
			// A good executable swaps in and clears the error.
			good := bin["v2"]
			if before.Version == "v2" {
				good = bin["v1"]
			}
			replace(t, good, exe, false)
			testutil.WaitFor(t, 20*time.Second, "the good executable to swap in", func() bool {
				return tk.plugin("probe").Generation == before.Generation+1
			})
			p = tk.plugin("probe")
			if p.LastError != "" || p.State != stateServing {
				t.Errorf("after the good swap: last_error %q state %s", p.LastError, p.State)
			}
			if got := probePid(mustGet(t, c, url)); got != p.PID {
				t.Errorf("answered by pid %d, want the new pid %d", got, p.PID)
			}
		})
	}
	if p := tk.plugin("probe"); p.Generation != first.Generation+uint64(len(cases)) {
		t.Errorf("generation %d, want %d", p.Generation, first.Generation+uint64(len(cases)))
	}
}

// TestCrashRestart kills the serving plugin with SIGKILL under load. The
// kernel restarts it; requests succeed again within 2 seconds, and the
// listening socket never refuses a connection.
func TestCrashRestart(t *testing.T) {
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": probeBin(t, "v1")})
	url := tk.url("web") + "/"
	old := tk.plugin("probe")

	var refused, failed, ok atomic.Int64
	var lastFail atomic.Int64 // unix nanos of the last failed request
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, _, err := get(c, url)
				switch {
				case err != nil && errors.Is(err, syscall.ECONNREFUSED):
					refused.Add(1)
				case err != nil || code != http.StatusOK:
					failed.Add(1)
					lastFail.Store(time.Now().UnixNano())
				default:
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a new generation", func() bool {
		p := tk.plugin("probe")
		return p.Generation > old.Generation && p.State == stateServing
	})
	recovered := time.Since(killed)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	p := tk.plugin("probe")
	if p.Restarts != 1 || p.PID == old.PID {
		t.Errorf("restarts %d pid %d (old %d); want 1 restart and a new pid", p.Restarts, p.PID, old.PID)
	}
	if !strings.Contains(p.LastError, "exited") && p.LastError != "" {
		t.Errorf("last_error = %q", p.LastError)
	}
	if n := refused.Load(); n != 0 {
		t.Errorf("%d connections refused", n)
	}
	if recovered > 2*time.Second {
		t.Errorf("serving again %v after the kill, want under 2s", recovered)
	}
	if lf := lastFail.Load(); lf != 0 && time.Unix(0, lf).Sub(killed) > 2*time.Second {
		t.Errorf("a request failed %v after the kill", time.Unix(0, lf).Sub(killed))
	}
	t.Logf("kill to serving again: %v; %d ok, %d failed (in flight at the kill), %d refused", recovered, ok.Load(), failed.Load(), refused.Load())
}

// TestCrashOnRequest: a request that makes the plugin exit gets a 502; the
// plugin is restarted and the next request succeeds.
func TestCrashOnRequest(t *testing.T) {
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": probeBin(t, "v1")})
	c := &http.Client{Timeout: 10 * time.Second}
	base := tk.url("web")
	old := tk.plugin("probe")
	code, body, err := get(c, base+"/crash")
	if err != nil || code != http.StatusBadGateway {
		t.Fatalf("GET /crash: %d %q %v; want 502", code, body, err)
	}
	if got := probePid(mustGet(t, c, base+"/")); got == old.PID || got == 0 {
		t.Fatalf("after the crash answered by pid %d (old %d)", got, old.PID)
	}
	if p := tk.plugin("probe"); p.Restarts != 1 || p.Errors != 1 {
		t.Errorf("restarts %d errors %d, want 1 and 1", p.Restarts, p.Errors)
	}
}
