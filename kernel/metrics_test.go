package kernel

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

const metricsConfig = `
[metrics]
address = "127.0.0.1:0"

[plugins.probe]
path = "plugins/probe"
watch = false     # swaps only when the test asks
rollback = false  # the test's 5xx answers must not undo its swap

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "talk"
protocol = "line"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "dns"
protocol = "dns"
address = "127.0.0.1:0"
plugin = "probe"

[[timers]]
name = "beat"
every = "250ms"
plugin = "probe"
`

// scrape is one parsed answer of /metrics.
type scrape map[string]*dto.MetricFamily

// scrape fetches and parses the kernel's /metrics with a real HTTP client
// and Prometheus's own text parser.
func (tk *testKernel) scrape(t testing.TB) scrape {
	t.Helper()
	addr := tk.k.MetricsAddress()
	if addr == "" {
		t.Fatal("the kernel serves no metrics")
	}
	return scrapeAt(t, addr)
}

func scrapeAt(t testing.TB, addr string) scrape {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// series returns the series of family name whose labels include every
// "key=value" pair given.
func (s scrape) series(name string, labels ...string) []*dto.Metric {
	mf := s[name]
	if mf == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		match := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			match = match && have[k] == v
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// value is the value of the one counter or gauge series of name with
// labels; -1 when there is none.
func (s scrape) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	ms := s.series(name, labels...)
	switch {
	case len(ms) == 0:
		return -1
	case len(ms) > 1:
		t.Fatalf("%s%v: %d series, want one", name, labels, len(ms))
	}
	switch m := ms[0]; {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// count is the sample count of the one histogram series of name with
// labels; -1 when there is none.
func (s scrape) count(t testing.TB, name string, labels ...string) int64 {
	t.Helper()
	ms := s.series(name, labels...)
	if len(ms) == 0 {
		return -1
	}
	if len(ms) > 1 || ms[0].Histogram == nil {
		t.Fatalf("%s%v: want one histogram series, got %v", name, labels, ms)
	}
	h := ms[0].GetHistogram()
	if b := h.GetBucket(); len(b) == 0 || b[len(b)-1].GetCumulativeCount() > h.GetSampleCount() {
		t.Fatalf("%s%v: bad buckets %v", name, labels, b)
	}
	return int64(h.GetSampleCount())
}

// counts are the numbers ctl and /metrics both report, by a name that
// says where each is.
type counts map[string]float64

// metricsCounts reads the counts from a scrape.
func metricsCounts(t testing.TB, s scrape) counts {
	c := counts{}
	for _, l := range []string{"web", "talk", "dns"} {
		for _, f := range []string{"connections", "connections_accepted_total", "requests_total", "errors_total", "connections_refused_total"} {
			c["listener "+l+" "+f] = s.value(t, "switchyard_listener_"+f, "listener="+l)
		}
	}
	for _, f := range []string{"generation", "inflight", "served_total", "errors_total", "restarts_total", "swaps_total", "swap_failures_total", "rollbacks_total"} {
		c["plugin probe "+f] = s.value(t, "switchyard_plugin_"+f, "plugin=probe")
	}
	for _, st := range slotStates {
		c["plugin probe state "+st] = s.value(t, "switchyard_plugin_state", "plugin=probe", "state="+st)
	}
	for _, f := range []string{"ticks_total", "skipped_total", "errors_total"} {
		c["timer beat "+f] = s.value(t, "switchyard_timer_"+f, "timer=beat")
	}
	return c
}

// ctlCounts reads the same counts from `ctl listeners`, `plugins` and
// `timers`.
func ctlCounts(t testing.TB, tk *testKernel) counts {
	t.Helper()
	var ls []ListenerInfo
	var ps []pluginInfo
	var ts []TimerInfo
	for cmd, v := range map[string]any{"listeners": &ls, "plugins": &ps, "timers": &ts} {
		r := tk.ctl(cmd)
		if !r.OK {
			t.Fatalf("ctl %s: %s", cmd, r.Error)
		}
		if err := json.Unmarshal(r.Data, v); err != nil {
			t.Fatalf("ctl %s: %v", cmd, err)
		}
	}
	c := counts{}
	for _, l := range ls {
		p := "listener " + l.Name + " "
		c[p+"connections"] = float64(l.Connections)
		c[p+"connections_accepted_total"] = float64(l.Accepted)
		c[p+"requests_total"] = float64(l.Requests)
		c[p+"errors_total"] = float64(l.Errors)
		c[p+"connections_refused_total"] = float64(l.Refused)
	}
	for _, pi := range ps {
		p := "plugin " + pi.Name + " "
		c[p+"generation"] = float64(pi.Generation)
		c[p+"inflight"] = float64(pi.Inflight)
		c[p+"served_total"] = float64(pi.Served)
		c[p+"errors_total"] = float64(pi.Errors)
		c[p+"restarts_total"] = float64(pi.Restarts)
		c[p+"swaps_total"] = float64(pi.Swaps)
		c[p+"swap_failures_total"] = float64(pi.SwapFailures)
		c[p+"rollbacks_total"] = float64(pi.Rollbacks)
		for _, st := range slotStates {
			c[p+"state "+st] = 0
		}
		c[p+"state "+pi.State] = 1
	}
	for _, ti := range ts {
		p := "timer " + ti.Name + " "
		c[p+"ticks_total"] = float64(ti.Ticks)
		c[p+"skipped_total"] = float64(ti.Skipped)
		c[p+"errors_total"] = float64(ti.Errors)
	}
	return c
}

// TestMetrics sends known traffic through a kernel with real plugins and
// checks that /metrics counts exactly that, and exactly what ctl says.
func TestMetrics(t *testing.T) {
	tk := startKernel(t, metricsConfig, map[string]string{"probe": probeBin(t, "v1")})
	c := &http.Client{Timeout: 30 * time.Second}
	web := tk.url("web")

	// HTTP: 7 answers, 3 server errors the plugin answers itself, one
	// crash (the kernel answers 502, or cuts the response), and after a
	// swap 2 more answers.
	for range 7 {
		mustGet(t, c, web+"/")
	}
	for range 3 {
		if code, body, err := get(c, web+"/status/500"); err != nil || code != 500 {
			t.Fatalf("/status/500: %d %q %v", code, body, err)
		}
	}
	pid := tk.plugin("probe").PID
	_, _, _ = get(c, web+"/crash")
	testutil.WaitFor(t, 30*time.Second, "the probe restarted", func() bool {
		p := tk.plugin("probe")
		return p.State == stateServing && p.PID != pid && p.Generation == 2
	})

	// Line: one session of three lines.
	conn, err := net.Dial("tcp", tk.bound("talk"))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	rd := bufio.NewReader(conn)
	if greeting, err := rd.ReadString('\n'); err != nil || !strings.Contains(greeting, "ready") {
		t.Fatalf("line greeting %q %v", greeting, err)
	}
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(conn, "line %d\r\n", i)
		if reply, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(reply, fmt.Sprintf("#%d ", i)) {
			t.Fatalf("line %d: %q %v", i, reply, err)
		}
	}
	conn.Close()

	// DNS: two queries over UDP.
	for range 2 {
		q := new(dns.Msg)
		q.SetQuestion("metrics.test.", dns.TypeTXT)
		if r, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, tk.bound("dns")); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("DNS: %v %v", r, err)
		}
	}

	// A swap by ctl reload, then one that fails: the file is no
	// executable any more.
	if r := tk.ctl("reload probe"); !r.OK {
		t.Fatalf("reload: %s", r.Error)
	}
	for range 2 {
		mustGet(t, c, web+"/")
	}
	if err := os.WriteFile(filepath.Join(tk.dir, "plugins", "probe"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if r := tk.ctl("reload probe"); r.OK {
		t.Fatal("reload of a broken executable succeeded")
	}

	// The store: one put of 5 bytes and one delete from ctl, besides the
	// probe's tick counter.
	if r := tk.ctl("state put shared/metrics hello"); !r.OK {
		t.Fatal(r.Error)
	}
	if r := tk.ctl("state del shared/metrics"); !r.OK {
		t.Fatal(r.Error)
	}
	testutil.WaitFor(t, 30*time.Second, "two ticks and the line session's close", func() bool {
		s := tk.scrape(t)
		return s.value(t, "switchyard_timer_ticks_total", "timer=beat") >= 2 &&
			s.count(t, "switchyard_plugin_call_duration_seconds", "plugin=probe", "kind=close") == 1
	})

	// The timer ticks on: compare a scrape with ctl between two scrapes
	// that agree, so nothing moved in between.
	var s scrape
	var fromMetrics, fromCtl counts
	for try := 0; ; try++ {
		s = tk.scrape(t)
		fromMetrics = metricsCounts(t, s)
		fromCtl = ctlCounts(t, tk)
		if maps.Equal(fromMetrics, metricsCounts(t, tk.scrape(t))) {
			break
		}
		if try == 20 {
			t.Fatal("the counts never stood still between two scrapes")
		}
	}
	for _, key := range slices.Sorted(maps.Keys(fromCtl)) {
		if fromMetrics[key] != fromCtl[key] {
			t.Errorf("%s: /metrics says %v, ctl %v", key, fromMetrics[key], fromCtl[key])
		}
	}
	if len(fromMetrics) != len(fromCtl) {
		t.Errorf("/metrics has %d counts, ctl %d", len(fromMetrics), len(fromCtl))
	}

	ticks := int64(fromMetrics["timer beat ticks_total"])
	tickErrors := int64(fromMetrics["timer beat errors_total"])
	stored := tk.ctl("state get probe/ticks/beat")
	var sv StateValue
	if err := json.Unmarshal(stored.Data, &sv); err != nil || !stored.OK {
		t.Fatalf("state get: %s %v", stored.Error, err)
	}
	n, err := strconv.Atoi(sv.Value)
	if err != nil {
		t.Fatal(err)
	}
	// Each tick that succeeded stored its count, as decimal digits.
	tickBytes := 0
	for i := 1; i <= n; i++ {
		tickBytes += len(strconv.Itoa(i))
	}

	want := []struct {
		what      string
		got, want float64
	}{
		{"web requests", fromMetrics["listener web requests_total"], 13},
		{"web errors: the crash", fromMetrics["listener web errors_total"], 1},
		{"talk requests: three lines", fromMetrics["listener talk requests_total"], 3},
		{"talk accepted", fromMetrics["listener talk connections_accepted_total"], 1},
		{"talk open now", fromMetrics["listener talk connections"], 0},
		{"dns requests", fromMetrics["listener dns requests_total"], 2},
		{"generation: start, restart, swap", fromMetrics["plugin probe generation"], 3},
		{"restarts", fromMetrics["plugin probe restarts_total"], 1},
		{"swaps", fromMetrics["plugin probe swaps_total"], 1},
		{"swap failures", fromMetrics["plugin probe swap_failures_total"], 1},
		{"rollbacks", fromMetrics["plugin probe rollbacks_total"], 0},
		{"serving", fromMetrics["plugin probe state serving"], 1},
		{"failed", fromMetrics["plugin probe state failed"], 0},
		{"inflight", fromMetrics["plugin probe inflight"], 0},
		{"tick errors", float64(tickErrors), float64(ticks - int64(n))},
		{"store writes: ticks stored, a put and a delete", s.value(t, "switchyard_store_writes_total"), float64(n + 2)},
		{"store bytes", s.value(t, "switchyard_store_written_bytes_total"), float64(tickBytes + len("hello"))},
		{"build info", s.value(t, "switchyard_build_info", "version=test", "goversion="+runtime.Version()), 1},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s: %v, want %v", w.what, w.got, w.want)
		}
	}
	hists := []struct {
		name   string
		labels []string
		want   int64
	}{
		{"switchyard_listener_request_duration_seconds", []string{"listener=web", "protocol=http"}, 13},
		{"switchyard_listener_request_duration_seconds", []string{"listener=talk", "protocol=line"}, 3},
		{"switchyard_listener_request_duration_seconds", []string{"listener=dns", "protocol=dns"}, 2},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=http", "kind=request"}, 13},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=dns", "kind=query"}, 2},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=line", "kind=open"}, 1},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=line", "kind=line"}, 3},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=line", "kind=close"}, 1},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=timer", "kind=tick"}, ticks},
		{"switchyard_plugin_call_duration_seconds", []string{"plugin=probe", "protocol=line", "kind=block"}, -1},
	}
	for _, h := range hists {
		if got := s.count(t, h.name, h.labels...); got != h.want {
			t.Errorf("%s%v: %d samples, want %d", h.name, h.labels, got, h.want)
		}
	}
	for _, name := range []string{"switchyard_uptime_seconds", "go_goroutines", "process_open_fds", "process_start_time_seconds"} {
		if v := s.value(t, name); v <= 0 {
			t.Errorf("%s = %v, want a positive value", name, v)
		}
	}
	if v := s.value(t, "switchyard_plugin_info", "plugin=probe", "version=v1"); v != 1 {
		t.Errorf("switchyard_plugin_info{version=v1} = %v", v)
	}

	// ctl status names the address, and only /metrics and / answer.
	var st StatusInfo
	if r := tk.ctl("status"); !r.OK || json.Unmarshal(r.Data, &st) != nil || st.Metrics != tk.k.MetricsAddress() {
		t.Errorf("status metrics %q, want %q", st.Metrics, tk.k.MetricsAddress())
	}
	base := "http://" + tk.k.MetricsAddress()
	if code, body, err := get(c, base+"/"); err != nil || code != 200 || !strings.Contains(body, "/metrics") {
		t.Errorf("GET /: %d %q %v", code, body, err)
	}
	if code, _, err := get(c, base+"/nope"); err != nil || code != 404 {
		t.Errorf("GET /nope: %d %v", code, err)
	}
}

// TestMetricsReload turns the metrics server on, keeps it, moves it, fails
// to move it onto a busy port, and turns it off, by configuration reloads.
func TestMetricsReload(t *testing.T) {
	base := strings.SplitN(metricsConfig, "[plugins.probe]", 2)[1]
	base = "[plugins.probe]" + base
	tk := startKernel(t, base, map[string]string{"probe": probeBin(t, "v1")})
	if a := tk.k.MetricsAddress(); a != "" {
		t.Fatalf("metrics on %q with no [metrics]", a)
	}
	reload := func(cfg string) (ReloadSummary, bool, string) {
		t.Helper()
		writeConfig(t, tk, cfg)
		r := tk.ctl("reload-config")
		var sum ReloadSummary
		if r.OK {
			if err := json.Unmarshal(r.Data, &sum); err != nil {
				t.Fatal(err)
			}
		}
		return sum, r.OK, r.Error
	}
	refused := func(addr string) {
		t.Helper()
		if c, err := net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections", addr)
		}
	}

	sum, ok, msg := reload("[metrics]\naddress = \"127.0.0.1:0\"\n" + base)
	first := tk.k.MetricsAddress()
	if !ok || first == "" || sum.Metrics != "serving on "+first {
		t.Fatalf("turning metrics on: ok %v %q, summary %q, address %q", ok, msg, sum.Metrics, first)
	}
	if tk.scrape(t).value(t, "switchyard_build_info", "version=test", "goversion="+runtime.Version()) != 1 {
		t.Error("no build info")
	}

	// The same address, even port 0, keeps the socket.
	sum, ok, msg = reload("[metrics]\naddress = \"127.0.0.1:0\"\n" + base)
	if !ok || sum.Metrics != "" || tk.k.MetricsAddress() != first {
		t.Fatalf("unchanged: ok %v %q, summary %q, address %q (was %q)", ok, msg, sum.Metrics, tk.k.MetricsAddress(), first)
	}

	// A busy address fails the reload, and nothing changes.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, ok, msg = reload("[metrics]\naddress = \"" + busy.Addr().String() + "\"\n" + base)
	if ok || !strings.Contains(msg, "metrics:") || !strings.Contains(msg, "address already in use") {
		t.Errorf("moving onto a busy port: ok %v %q", ok, msg)
	}
	if tk.k.MetricsAddress() != first {
		t.Errorf("after a failed reload metrics are on %q, want %q", tk.k.MetricsAddress(), first)
	}
	scrapeAt(t, first)

	// Another address: the new one serves, the old one is closed.
	sum, ok, msg = reload("[metrics]\naddress = \"127.0.0.2:0\"\n" + base)
	second := tk.k.MetricsAddress()
	if !ok || !strings.HasPrefix(second, "127.0.0.2:") || sum.Metrics != "serving on "+second {
		t.Fatalf("moving: ok %v %q, summary %q, address %q", ok, msg, sum.Metrics, second)
	}
	scrapeAt(t, second)
	refused(first)

	// No [metrics]: none served.
	sum, ok, msg = reload(base)
	if !ok || sum.Metrics != "stopped" || tk.k.MetricsAddress() != "" {
		t.Fatalf("turning metrics off: ok %v %q, summary %q, address %q", ok, msg, sum.Metrics, tk.k.MetricsAddress())
	}
	refused(second)
}

// TestMetricsBusyAddress: a kernel whose metrics address is taken does not
// start, and says why.
func TestMetricsBusyAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := "[metrics]\naddress = \"" + busy.Addr().String() + "\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := testutil.ShortDir(t)
	env := map[string]string{"XDG_RUNTIME_DIR": run}
	k, err := New(Options{
		ConfigPath: cfgPath,
		DataDir:    filepath.Join(dir, "state"),
		Socket:     filepath.Join(run, "admin.sock"),
		Logger:     slog.New(slog.NewTextHandler(&testutil.SyncBuffer{}, nil)),
		Getenv:     func(k string) string { return env[k] },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = k.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "metrics: listen tcp "+busy.Addr().String()) ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run = %v, want the busy metrics address", err)
	}
	// Nothing is left behind: the admin socket is gone.
	if _, err := os.Stat(filepath.Join(run, "admin.sock")); !os.IsNotExist(err) {
		t.Errorf("admin socket after a failed start: %v", err)
	}
}
