package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

const upgradeConfig = `
[upgrade]
timeout = "10s"

[metrics]
address = "127.0.0.1:0"

[plugins.probe]
path = "bin/plugins/probe"
drain_timeout = "10s"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "lines"
protocol = "line"
address = "127.0.0.1:0"
plugin = "probe"

[[timers]]
name = "beat"
every = "200ms"
plugin = "probe"
`

// status asks the kernel on the admin socket for its status.
func (k *kproc) status() (pid int, conns int64) {
	k.t.Helper()
	out, errOut, code := k.ctl("-json", "status")
	var r struct {
		Data struct {
			PID         int   `json:"pid"`
			Connections int64 `json:"connections"`
		} `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		k.t.Fatalf("ctl status: %d %q %q", code, out, errOut)
	}
	return r.Data.PID, r.Data.Connections
}

// metricsAddress is the metrics server's address, as `ctl status` says.
func (k *kproc) metricsAddress() string {
	k.t.Helper()
	out, errOut, code := k.ctl("-json", "status")
	var r struct {
		Data struct {
			Metrics string `json:"metrics"`
		} `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Data.Metrics == "" {
		k.t.Fatalf("ctl status: no metrics address: %d %q %q", code, out, errOut)
	}
	return r.Data.Metrics
}

// upgradeResult runs `ctl -json upgrade`.
type upgradeResult struct {
	OldPID   int     `json:"old_pid"`
	NewPID   int     `json:"new_pid"`
	ReadyMS  float64 `json:"ready_ms"`
	TookMS   float64 `json:"took_ms"`
	Sessions int     `json:"sessions"`
}

func (k *kproc) upgrade() (upgradeResult, string, int) {
	out, errOut, code := k.ctl("-json", "-timeout", "60s", "upgrade")
	var r struct {
		OK    bool          `json:"ok"`
		Data  upgradeResult `json:"data"`
		Error string        `json:"error"`
	}
	_ = json.Unmarshal([]byte(out), &r)
	if !r.OK {
		return r.Data, r.Error + errOut, code
	}
	return r.Data, "", code
}

// stopPID shuts down a kernel this test did not start (one started by an
// upgrade) and waits for it to be gone.
//
// A kernel that does not exit is made to print its goroutines (SIGQUIT) into
// the log the test shows, then killed: it holds the test's stderr pipe, and
// the test's cleanup would otherwise wait for it for ever.
//
// ctl shutdown is sent again every 5 s while the kernel lives, and a failed
// one is logged: a shutdown that reached no kernel, or the wrong one, must
// not leave this one running.
func stopPID(t *testing.T, k *kproc, pid int) {
	t.Helper()
	shutdown := func() {
		if out, errOut, code := k.ctl("shutdown"); code != 0 {
			t.Logf("ctl shutdown (for pid %d): exit %d: %s%s", pid, code, out, errOut)
		}
	}
	shutdown()
	deadline := time.Now().Add(30 * time.Second)
	again := time.Now().Add(5 * time.Second)
	for testutil.Alive(pid) {
		if time.Now().After(again) {
			shutdown()
			again = time.Now().Add(5 * time.Second)
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGQUIT)
			time.Sleep(2 * time.Second)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("kernel pid %d did not exit within 30s of ctl shutdown; killed it", pid)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// latency records request latencies by phase.
type latency struct {
	mu     sync.Mutex
	phase  string
	byName map[string][]time.Duration
}

func (l *latency) add(d time.Duration) {
	l.mu.Lock()
	l.byName[l.phase] = append(l.byName[l.phase], d)
	l.mu.Unlock()
}

func (l *latency) set(phase string) {
	l.mu.Lock()
	l.phase = phase
	l.mu.Unlock()
}

func (l *latency) p99(phase string) (time.Duration, int) {
	l.mu.Lock()
	ds := slices.Clone(l.byName[phase])
	l.mu.Unlock()
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)*99/100], len(ds)
}

// TestUpgradeUnderLoad runs `ctl upgrade` five times while eight HTTP
// clients load the kernel and 100 line sessions are in mid-dialogue: no
// HTTP request fails, no connection is refused, every line session carries
// on with its state, the timer goes on ticking, and the kernel's pid
// changes each time.
func TestUpgradeUnderLoad(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, upgradeConfig)
	k.ready()
	web, lines := k.bound("web"), k.bound("lines")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var (
		wg               sync.WaitGroup
		httpOK, httpFail atomic.Int64
		refused          atomic.Int64
		lineOK, lineFail atomic.Int64
		mu               sync.Mutex
		errs             []string
		lat              = &latency{phase: "steady", byName: map[string][]time.Duration{}}
	)
	record := func(format string, args ...any) {
		mu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for ctx.Err() == nil {
				t0 := time.Now()
				res, err := c.Get("http://" + web + "/")
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						refused.Add(1)
					}
					httpFail.Add(1)
					record("http: %v", err)
					continue
				}
				body, _ := bufio.NewReader(res.Body).ReadString('\n')
				res.Body.Close()
				if res.StatusCode != http.StatusOK || !strings.HasPrefix(body, "probe ") {
					httpFail.Add(1)
					record("http: %d %q", res.StatusCode, body)
					continue
				}
				lat.add(time.Since(t0))
				httpOK.Add(1)
			}
		}()
	}
	type session struct {
		c net.Conn
		r *bufio.Reader
		n int
	}
	var sessions []*session
	for range 100 {
		c, err := net.Dial("tcp", lines)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := &session{c: c, r: bufio.NewReader(c)}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if g, err := s.r.ReadString('\n'); err != nil || !strings.Contains(g, "ready") {
			t.Fatalf("greeting %q %v", g, err)
		}
		sessions = append(sessions, s)
	}
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s.n++
				line := fmt.Sprintf("s%d l%d", i, s.n)
				s.c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := fmt.Fprintf(s.c, "%s\r\n", line); err != nil {
					lineFail.Add(1)
					record("line %d: write: %v", i, err)
					return
				}
				got, err := s.r.ReadString('\n')
				want := fmt.Sprintf("#%d probe ", s.n)
				if err != nil || !strings.HasPrefix(got, want) || !strings.HasSuffix(strings.TrimRight(got, "\r\n"), ": "+line) {
					lineFail.Add(1)
					record("line %d: sent %q, got %q %v (want %s...)", i, line, got, err, want)
					return
				}
				lineOK.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	testutil.WaitFor(t, 30*time.Second, "load", func() bool { return httpOK.Load() > 500 && lineOK.Load() > 500 })
	pid, _ := k.status()
	pids := []int{pid}
	metrics := k.metricsAddress()
	var results []upgradeResult
	for i := range 5 {
		lat.set(fmt.Sprintf("upgrade %d", i+1))
		r, msg, code := k.upgrade()
		if code != 0 {
			t.Fatalf("upgrade %d: %d %s", i+1, code, msg)
		}
		lat.set("steady")
		if r.OldPID != pids[len(pids)-1] || r.NewPID == r.OldPID || r.Sessions != 100 {
			t.Fatalf("upgrade %d: %+v (pids so far %v)", i+1, r, pids)
		}
		testutil.WaitFor(t, 30*time.Second, "the old kernel to exit", func() bool { return !testutil.Alive(r.OldPID) })
		if now, _ := k.status(); now != r.NewPID {
			t.Fatalf("upgrade %d: status answers pid %d, want the new %d", i+1, now, r.NewPID)
		}
		// The metrics socket was handed over: the same port (a fresh
		// bind of port 0 would get another), served by the new kernel.
		if now := k.metricsAddress(); now != metrics {
			t.Errorf("upgrade %d: metrics on %q, want the handed-over %q", i+1, now, metrics)
		}
		if body := httpGet(t, "http://"+metrics+"/metrics"); !strings.Contains(body, "switchyard_build_info{") {
			t.Errorf("upgrade %d: /metrics after the upgrade:\n%.500s", i+1, body)
		}
		pids = append(pids, r.NewPID)
		results = append(results, r)
		n, l := httpOK.Load(), lineOK.Load()
		testutil.WaitFor(t, 30*time.Second, "traffic after the upgrade", func() bool { return httpOK.Load() > n+200 && lineOK.Load() > l+200 })
	}
	t.Cleanup(func() { stopPID(t, k, pids[len(pids)-1]) })
	stop()
	wg.Wait()
	steady, ns := lat.p99("steady")
	for i, r := range results {
		p99, n := lat.p99(fmt.Sprintf("upgrade %d", i+1))
		t.Logf("upgrade %d: pid %d -> %d, new kernel ready %.0fms, handed over %d sessions in %.0fms; p99 %v over %d requests during it",
			i+1, r.OldPID, r.NewPID, r.ReadyMS, r.Sessions, r.TookMS, p99.Round(time.Microsecond), n)
	}
	t.Logf("steady p99 %v over %d requests; http %d ok %d failed (%d refused); line %d ok %d failed",
		steady.Round(time.Microsecond), ns, httpOK.Load(), httpFail.Load(), refused.Load(), lineOK.Load(), lineFail.Load())
	if httpFail.Load() != 0 || lineFail.Load() != 0 || refused.Load() != 0 {
		t.Fatalf("failures: %v", errs)
	}
	// The timer kept its schedule through the kernels: probe counted its
	// ticks in the store, which every kernel shared in turn.
	out, _, _ := k.ctl("-json", "timers")
	if !strings.Contains(out, `"name":"beat"`) {
		t.Fatalf("timers after the upgrades: %s", out)
	}
}

// TestUpgradeToBrokenKernel: an upgrade to an executable that exits at
// start, or that never reports ready, fails and leaves the old kernel
// serving with its connections.
func TestUpgradeToBrokenKernel(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, upgradeConfig)
	k.ready()
	c, err := net.Dial("tcp", k.bound("lines"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r.ReadString('\n')
	say := func(line string) string {
		t.Helper()
		fmt.Fprintf(c, "%s\r\n", line)
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		return got
	}
	say("one")
	exe := filepath.Join(dir, "bin", "switchyard")
	good, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	// ctl runs from a copy: the kernel's executable is about to be broken.
	k.bin = filepath.Join(dir, "bin", "switchyard-ctl")
	if err := os.WriteFile(k.bin, good, 0o755); err != nil {
		t.Fatal(err)
	}
	pid, _ := k.status()
	for _, name := range []string{"exit1", "hang"} {
		bad, err := os.ReadFile(bins.Build(t, name, "./internal/testbin/testdata/"+name, ""))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(exe+".new", bad, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(exe+".new", exe); err != nil {
			t.Fatal(err)
		}
		_, msg, code := k.upgrade()
		if code == 0 {
			t.Fatalf("upgrade to %s succeeded", name)
		}
		t.Logf("upgrade to %s: %s", name, msg)
		if now, _ := k.status(); now != pid {
			t.Fatalf("after a failed upgrade to %s the kernel is pid %d, want %d", name, now, pid)
		}
		if body := httpGet(t, "http://"+k.bound("web")+"/"); !strings.HasPrefix(body, "probe ") {
			t.Fatalf("after a failed upgrade: %q", body)
		}
	}
	if got := say("two"); !strings.HasPrefix(got, "#2 probe ") {
		t.Fatalf("the session after failed upgrades: %q", got)
	}
	// With the good executable back, an upgrade goes through.
	if err := os.WriteFile(exe+".new", good, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	res, msg, code := k.upgrade()
	if code != 0 {
		t.Fatalf("upgrade: %s\n%s", msg, k.stderr.String())
	}
	t.Cleanup(func() { stopPID(t, k, res.NewPID) })
	if got := say("three"); !strings.HasPrefix(got, "#3 probe ") {
		t.Fatalf("the session after the upgrade: %q", got)
	}
}

// TestUpgradeMidSMTP: an SMTP client in the middle of DATA when the kernel
// upgrades carries on, on the same connection, with the new kernel; the
// message is stored whole.
func TestUpgradeMidSMTP(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, smtpOnly)
	k.ready()
	c, err := net.Dial("tcp", k.bound("mail"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", code, err)
			}
			if strings.HasPrefix(line, code+" ") {
				return
			}
			if !strings.HasPrefix(line, code+"-") {
				t.Fatalf("want %s, got %q", code, line)
			}
		}
	}
	send := func(s string) {
		t.Helper()
		if _, err := fmt.Fprint(c, s); err != nil {
			t.Fatal(err)
		}
	}
	expect("220")
	send("EHLO client.test\r\n")
	expect("250")
	send("MAIL FROM:<mid@example.test>\r\n")
	expect("250")
	send("RCPT TO:<kept@example.test>\r\n")
	expect("250")
	send("DATA\r\n")
	expect("354")
	send("Subject: across an upgrade\r\n\r\nbefore the upgrade\r\n..a dot-stuffed line\r\nhalf a li")
	r1, msg, code := k.upgrade()
	if code != 0 || r1.Sessions != 1 {
		t.Fatalf("upgrade: %d %s %+v", code, msg, r1)
	}
	t.Cleanup(func() { stopPID(t, k, r1.NewPID) })
	send("ne\r\nafter the upgrade\r\n.\r\n")
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("end of data after the upgrade: %q %v", line, err)
	}
	id := strings.TrimSpace(strings.TrimPrefix(line, "250 2.0.0 Ok: queued as "))
	body := k.checkMessage(id)
	for _, want := range []string{"before the upgrade\r\n.a dot-stuffed line\r\nhalf a line\r\nafter the upgrade\r\n", "Return-Path: <mid@example.test>"} {
		if !strings.Contains(body, want) {
			t.Fatalf("stored message lacks %q:\n%s", want, body)
		}
	}
	send("QUIT\r\n")
	expect("221")
}
