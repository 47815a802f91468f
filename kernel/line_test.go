package kernel

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// lineConfig serves probe on a line listener at any free port, with extra
// listener keys, and a timer when every is set.
func lineConfig(extra, every string) string {
	cfg := `
[plugins.probe]
path = "plugins/probe"
start_timeout = "10s"
drain_timeout = "20s"
call_timeout = "5s"

[[listeners]]
name = "lines"
protocol = "line"
address = "127.0.0.1:0"
plugin = "probe"
` + extra
	if every != "" {
		cfg += `
[[timers]]
name = "beat"
every = "` + every + `"
plugin = "probe"
`
	}
	return cfg
}

// lineClient is one client of a line listener.
type lineClient struct {
	t  testing.TB
	c  net.Conn
	r  *bufio.Reader
	id string
}

func dialLine(t testing.TB, addr string) *lineClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineClient{t: t, c: c, r: bufio.NewReader(c)}
}

// readLine reads one line, without its CR LF.
func (lc *lineClient) readLine() (string, error) {
	lc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	s, err := lc.r.ReadString('\n')
	return strings.TrimRight(s, "\r\n"), err
}

func (lc *lineClient) mustRead() string {
	lc.t.Helper()
	s, err := lc.readLine()
	if err != nil {
		lc.t.Fatalf("read: %v (got %q)", err, s)
	}
	return s
}

func (lc *lineClient) send(line string) error {
	lc.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	_, err := lc.c.Write([]byte(line + "\r\n"))
	return err
}

// roundTrip sends a line and reads the answer.
func (lc *lineClient) roundTrip(line string) string {
	lc.t.Helper()
	if err := lc.send(line); err != nil {
		lc.t.Fatalf("send %q: %v", line, err)
	}
	return lc.mustRead()
}

// probeLine parses "#N probe VERSION pid PID: TEXT".
func probeLine(s string) (n int, version string, pid int, text string, ok bool) {
	head, text, found := strings.Cut(s, ": ")
	if !found {
		return 0, "", 0, "", false
	}
	if _, err := fmt.Sscanf(head, "#%d probe %s pid %d", &n, &version, &pid); err != nil {
		return 0, "", 0, "", false
	}
	return n, version, pid, text, true
}

// TestLineProbe: a line session keeps its state in the kernel, so the line
// count carries on across a swap and across a crash of the plugin, and
// `ctl conns` lists the connection.
func TestLineProbe(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	tk := startKernel(t, lineConfig("", ""), map[string]string{"probe": bin["v1"]})
	lc := dialLine(t, tk.bound("lines"))
	if g := lc.mustRead(); !strings.HasPrefix(g, "probe v1 pid ") || !strings.HasSuffix(g, " ready") {
		t.Fatalf("greeting %q", g)
	}
	check := func(line string, wantN int, wantVersion string) int {
		t.Helper()
		got := lc.roundTrip(line)
		n, v, pid, text, ok := probeLine(got)
		if !ok || n != wantN || v != wantVersion || text != line {
			t.Fatalf("sent %q, got %q: want #%d from %s", line, got, wantN, wantVersion)
		}
		return pid
	}
	pid1 := check("one", 1, "v1")
	check("two", 2, "v1")

	r := tk.ctl("conns")
	var conns []ConnInfo
	if err := json.Unmarshal(r.Data, &conns); err != nil || !r.OK || len(conns) != 1 {
		t.Fatalf("conns: %s %v", r.Data, err)
	}
	if c := conns[0]; c.Listener != "lines" || c.Remote != lc.c.LocalAddr().String() || c.BytesIn == 0 || c.BytesOut == 0 {
		t.Fatalf("conns row %+v", c)
	}
	if r := tk.ctl("conns nope"); r.OK {
		t.Fatalf("conns of an unknown listener: %+v", r)
	}

	// A swap between two lines: the new version answers, counting on.
	replace(t, bin["v2"], filepath.Join(tk.dir, "plugins", "probe"), false)
	testutil.WaitFor(t, 30*time.Second, "generation 2", func() bool { return tk.plugin("probe").Generation == 2 })
	pid2 := check("three", 3, "v2")
	if pid2 == pid1 {
		t.Fatalf("the same pid %d answered after the swap", pid1)
	}

	// A crash in the middle of a line: the client gets the plugin's
	// failure reply, and the next line is answered by the restarted
	// process with the count the last answer left.
	if got := lc.roundTrip("/crash"); got != "ERR probe unavailable" {
		t.Fatalf("crash answered %q", got)
	}
	pid3 := check("four", 4, "v2")
	if pid3 == pid2 {
		t.Fatalf("pid %d answered after its crash", pid2)
	}
	if tk.plugin("probe").Restarts != 1 {
		t.Fatalf("restarts = %d", tk.plugin("probe").Restarts)
	}

	// /quit: the reply, then the kernel closes the connection.
	if got := lc.roundTrip("/quit"); !strings.HasSuffix(got, ": bye") {
		t.Fatalf("quit answered %q", got)
	}
	if s, err := lc.readLine(); err == nil {
		t.Fatalf("read %q after /quit, want EOF", s)
	}
	testutil.WaitFor(t, 10*time.Second, "no connections", func() bool {
		conns, _ := tk.k.Conns("")
		return len(conns) == 0
	})
}

// TestLineLimits: an oversize line reaches the plugin as a too-long event
// and the connection carries on; an idle connection is closed; a reload
// that changes the limits keeps live sessions.
func TestLineLimits(t *testing.T) {
	tk := startKernel(t, lineConfig("max_line = 64\nidle_timeout = \"1s\"\n", ""), map[string]string{"probe": probeBin(t, "v1")})
	lc := dialLine(t, tk.bound("lines"))
	lc.mustRead()
	if got := lc.roundTrip(strings.Repeat("x", 200)); !strings.HasSuffix(got, ": line too long (64 bytes kept)") {
		t.Fatalf("long line answered %q", got)
	}
	if n, _, _, _, ok := probeLine(lc.roundTrip("after")); !ok || n != 2 {
		t.Fatal("the line after the long one was not #2")
	}
	// Idle for longer than idle_timeout: the kernel closes the connection.
	if s, err := lc.readLine(); err == nil {
		t.Fatalf("read %q from an idle connection, want it closed", s)
	}

	// A reload that raises the limits keeps a live session's connection
	// and applies them to it.
	lc2 := dialLine(t, tk.bound("lines"))
	lc2.mustRead()
	lc2.roundTrip("one")
	writeConfig(t, tk, lineConfig("max_line = 1024\nidle_timeout = \"1m\"\n", ""))
	if r := tk.ctl("reload-config"); !r.OK {
		t.Fatalf("reload-config: %s", r.Error)
	}
	if n, _, _, text, ok := probeLine(lc2.roundTrip(strings.Repeat("y", 200))); !ok || n != 2 || len(text) != 200 {
		t.Fatalf("after the reload, a 200-byte line was not answered whole as #2")
	}
}

// TestLineSwapUnderLoad opens 1,000 connections, each exchanging lines in
// lock step, while the plugin is swapped five times (by rename and in
// place): no connection drops, and every answer carries the connection's
// own next count.
func TestLineSwapUnderLoad(t *testing.T) {
	const conns = 1000
	bin := buildVersions(t, "v1", "v2", "v3")
	tk := startKernel(t, lineConfig("", ""), map[string]string{"probe": bin["v1"]})
	addr := tk.bound("lines")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var (
		wg       sync.WaitGroup
		answers  atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		errs     []string
		versions = map[string]int64{}
	)
	fail := func(format string, args ...any) {
		failures.Add(1)
		mu.Lock()
		if len(errs) < 10 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	clients := make([]*lineClient, conns)
	for i := range clients {
		clients[i] = dialLine(t, addr)
	}
	for i, lc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g, err := lc.readLine(); err != nil || !strings.HasSuffix(g, " ready") {
				fail("conn %d greeting %q %v", i, g, err)
				return
			}
			for n := 1; ctx.Err() == nil; n++ {
				line := fmt.Sprintf("c%d l%d", i, n)
				if err := lc.send(line); err != nil {
					fail("conn %d send: %v", i, err)
					return
				}
				got, err := lc.readLine()
				if err != nil {
					fail("conn %d line %d: %v", i, n, err)
					return
				}
				gotN, v, _, text, ok := probeLine(got)
				if !ok || gotN != n || text != line {
					fail("conn %d sent %q got %q (want #%d)", i, line, got, n)
					return
				}
				answers.Add(1)
				mu.Lock()
				versions[v]++
				mu.Unlock()
				// Pace the clients: a thousand of them in lock step are
				// a load; a tight loop of each would be a benchmark.
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	testutil.WaitFor(t, 60*time.Second, "every connection answered", func() bool { return answers.Load() >= 2*conns })
	exe := filepath.Join(tk.dir, "plugins", "probe")
	for i := 1; i <= 5; i++ {
		before := tk.plugin("probe").Generation
		replace(t, bin[[]string{"v1", "v2", "v3"}[i%3]], exe, i%2 == 0)
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("generation %d", before+1), func() bool {
			return tk.plugin("probe").Generation == before+1
		})
		n := answers.Load()
		testutil.WaitFor(t, 30*time.Second, "answers after the swap", func() bool { return answers.Load() > n+2*conns })
	}
	stop()
	wg.Wait()
	live, _ := tk.k.Conns("")
	t.Logf("%d connections, %d answers, %d failures, by version %v", conns, answers.Load(), failures.Load(), versions)
	if failures.Load() != 0 {
		t.Fatalf("%d failures: %v", failures.Load(), errs)
	}
	if len(live) != conns {
		t.Fatalf("%d connections live after the swaps, want %d", len(live), conns)
	}
	if p := tk.plugin("probe"); p.Generation != 6 || p.Restarts != 0 {
		t.Fatalf("plugin after the swaps: %+v", p)
	}
}

// TestTimer: a timer's ticks reach the plugin on schedule, across a swap,
// and `ctl timers` shows them.
func TestTimer(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	tk := startKernel(t, lineConfig("", "100ms"), map[string]string{"probe": bin["v1"]})
	ticks := func() int {
		r := tk.ctl("state get probe/ticks/beat")
		var v StateValue
		if !r.OK || json.Unmarshal(r.Data, &v) != nil {
			return 0
		}
		var n int
		fmt.Sscan(v.Value, &n)
		return n
	}
	testutil.WaitFor(t, 20*time.Second, "3 ticks", func() bool { return ticks() >= 3 })
	if r := tk.ctl("reload probe"); !r.OK {
		t.Fatalf("reload: %s", r.Error)
	}
	n := ticks()
	testutil.WaitFor(t, 20*time.Second, "ticks after the swap", func() bool { return ticks() >= n+3 })
	// The tick that stored the last count may still be running: the
	// timer counts a tick once it has ended.
	var ts []TimerInfo
	r := tk.ctl("timers")
	if err := json.Unmarshal(r.Data, &ts); err != nil || len(ts) != 1 {
		t.Fatalf("timers: %s %v", r.Data, err)
	}
	if ti := ts[0]; ti.Name != "beat" || ti.Plugin != "probe" || ti.Every != "100ms" || ti.Ticks < uint64(n+2) || ti.Next == "" {
		t.Fatalf("timers row %+v", ti)
	}

	// A reload that removes the timer stops it; one that adds it back
	// starts it again.
	writeConfig(t, tk, lineConfig("", ""))
	r = tk.ctl("reload-config")
	if !r.OK || !strings.Contains(string(r.Data), `"timers_stopped":["beat"]`) {
		t.Fatalf("reload-config: %s %s", r.Data, r.Error)
	}
	if len(tk.k.Timers()) != 0 {
		t.Fatal("timer still listed")
	}
}
