// Command bench measures switchyard beside its baselines in one run: HTTP
// through a plugin against the same handler served in-process by net/http;
// SCGI from a real nginx through the kernel to the plugin against nginx to an
// in-process Go SCGI responder; and the latency of a hot swap. scripts/bench
// builds everything and runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "how long each side of a comparison runs in all, over its rounds")
	flag.IntVar(&rounds, "rounds", 5, "rounds each comparison is split into, alternating which side goes first")
	conns := flag.Int("conns", 50, "wrk connections")
	threads := flag.Int("threads", 2, "wrk threads")
	swaps := flag.Int("swaps", 20, "hot swaps to time")
	jsonOut := flag.String("json", "", "also write the results as JSON to this `file`")
	only := flag.String("only", "", "run only these comma-separated `sections` (http, line); default all")
	idle := flag.Int("idle", 10000, "idle line connections to open for the memory measurement (0: none)")
	smtpMsgs := flag.Int("smtp", 5000, "messages smtp-source sends to each SMTP receiver")
	flag.IntVar(&gomaxprocs, "gomaxprocs", 0, "GOMAXPROCS for the kernel, its plugins and the standalone baselines (0: Go's default)")
	flag.Parse()
	if gomaxprocs > 0 {
		// The kernel and the standalone baselines inherit it; the
		// plugins get it from their config entries (tuneConfig).
		os.Setenv("GOMAXPROCS", strconv.Itoa(gomaxprocs))
	}
	opts := options{idle: *idle, smtp: *smtpMsgs, sections: map[string]bool{"http": true, "line": true}}
	if *only != "" {
		opts.sections = map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			opts.sections[strings.TrimSpace(s)] = true
		}
	}
	if err := run(*duration, *conns, *threads, *swaps, *jsonOut, opts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Results is what a run measured.
type Results struct {
	Machine string `json:"machine"`
	// GOMAXPROCS is the -gomaxprocs of the run; 0 when Go's default.
	GOMAXPROCS int         `json:"gomaxprocs,omitempty"`
	HTTP       []WrkResult `json:"http"`
	// Ratio is the median of RatioRounds, each round's plugin req/s over
	// its in-process req/s.
	Ratio       float64   `json:"http_ratio"`
	RatioRounds []float64 `json:"http_ratio_rounds"`
	// HTTPCPU is the CPU time each process spent per request of hello.
	HTTPCPU *CPUResult  `json:"http_cpu_us_per_request,omitempty"`
	SCGI    []WrkResult `json:"scgi,omitempty"`
	// SCGIRatio is nginx → kernel → plugin req/s over nginx → in-process
	// responder req/s.
	SCGIRatio       float64   `json:"scgi_ratio,omitempty"`
	SCGIRatioRounds []float64 `json:"scgi_ratio_rounds,omitempty"`
	// Bodies are probe's /big of 1 and 16 KiB, through the plugin and
	// in-process.
	Bodies []BodyResult `json:"bodies,omitempty"`
	// DNS is dnsperf against zone through the kernel and in-process;
	// DNSRatio the first's queries/s over the second's.
	DNS            []DNSResult `json:"dns,omitempty"`
	DNSRatio       float64     `json:"dns_ratio,omitempty"`
	DNSRatioRounds []float64   `json:"dns_ratio_rounds,omitempty"`
	Swap           SwapResult  `json:"swap"`
	// InPlace times swaps by rewriting the executable in place, from the
	// end of the last write (which includes the watcher's debounce).
	InPlace SwapResult `json:"swap_in_place"`
	// Lines are the line-protocol measurements: round trips through probe
	// against an in-process echo, SMTP through the smtp plugin against
	// postfix's smtp-sink, and the kernel's memory per idle connection.
	Lines *LineResults `json:"lines,omitempty"`
}

// CPUResult is the CPU time (user and system, from /proc) per request of
// the processes of a comparison, in µs: the kernel and the plugin on one
// side, the in-process server on the other. The load generator's is not
// counted.
type CPUResult struct {
	Kernel    float64 `json:"kernel"`
	Plugin    float64 `json:"plugin"`
	InProcess float64 `json:"in_process"`
}

// options select what a run measures.
type options struct {
	sections map[string]bool // "http" (HTTP, SCGI, swaps), "line"
	idle     int             // idle line connections for the memory measurement
	smtp     int             // messages per smtp-source run
}

// WrkResult is one wrk run, or the runs of one side of a comparison:
// requests/s their mean, p50 and p99 the median of theirs.
type WrkResult struct {
	Name        string  `json:"name"`
	RequestsSec float64 `json:"requests_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
}

// BodyResult compares one body size through the plugin and in-process.
type BodyResult struct {
	Bytes       int         `json:"bytes"`
	Runs        []WrkResult `json:"runs"`
	Ratio       float64     `json:"ratio"`
	RatioRounds []float64   `json:"ratio_rounds"`
}

// SwapResult times hot swaps.
type SwapResult struct {
	Count    int       `json:"count"`
	MedianMS float64   `json:"median_ms"`
	MaxMS    float64   `json:"max_ms"`
	AllMS    []float64 `json:"all_ms"`
}

func run(duration time.Duration, conns, threads, swaps int, jsonOut string, opts options) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "sybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var res Results
	res.Machine, res.GOMAXPROCS = machine(), gomaxprocs
	if opts.sections["http"] {
		if err := benchHTTP(&res, root, tmp, duration, conns, threads, swaps); err != nil {
			return err
		}
	}
	if opts.sections["line"] {
		if res.Lines, err = lineSections(context.Background(), root, tmp, duration, opts.idle, opts.smtp); err != nil {
			return err
		}
	}
	report(os.Stdout, res, duration, conns)
	if jsonOut != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

// benchHTTP measures HTTP and SCGI through the kernel against their
// in-process baselines, and the latency of hot swaps.
func benchHTTP(res *Results, root, tmp string, duration time.Duration, conns, threads, swaps int) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (Debian: apt-get install wrk)")
	}

	// Two builds of hello to swap between; the kernel runs a copy.
	hello := filepath.Join(root, "bin", "plugins", "hello")
	alt := map[string]string{}
	for _, v := range []string{"bench-a", "bench-b"} {
		out := filepath.Join(tmp, "hello-"+v)
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", out, "./plugins/hello")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build hello %s: %w", v, err)
		}
		alt[v] = out
	}
	if err := os.MkdirAll(filepath.Join(tmp, "plugins"), 0o755); err != nil {
		return err
	}
	exe := filepath.Join(tmp, "plugins", "hello")
	if err := copyFile(alt["bench-a"], exe); err != nil {
		return err
	}

	kport, err := freePort()
	if err != nil {
		return err
	}
	bport, err := freePort()
	if err != nil {
		return err
	}
	ports := make([]int, 4) // probe through the kernel and in-process; zone likewise
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	probe, zone := filepath.Join(root, "bin", "plugins", "probe"), filepath.Join(root, "bin", "plugins", "zone")
	zoneFile := filepath.Join(root, "bin", "example.zone")
	cfg := fmt.Sprintf(`
[plugins.hello]
path = "plugins/hello"

[plugins.probe]
path = %q
watch = false

[plugins.zone]
path = %q
watch = false
[plugins.zone.settings]
file = %q

[[listeners]]
name = "hello"
protocol = "http"
address = "127.0.0.1:%d"
plugin = "hello"

[[listeners]]
name = "hello-scgi"
protocol = "scgi"
address = "unix:%s"
plugin = "hello"

[[listeners]]
name = "probe"
protocol = "http"
address = "127.0.0.1:%d"
plugin = "probe"

[[listeners]]
name = "zone"
protocol = "dns"
address = "127.0.0.1:%d"
plugin = "zone"
`, probe, zone, zoneFile, kport, filepath.Join(tmp, "k.sock"), ports[0], ports[2])
	if err := os.WriteFile(filepath.Join(tmp, "bench.toml"), []byte(tuneConfig(cfg)), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kernel := exec.CommandContext(ctx, filepath.Join(root, "bin", "switchyard"), "serve",
		"-config", filepath.Join(tmp, "bench.toml"), "-data", filepath.Join(tmp, "state"),
		"-socket", filepath.Join(tmp, "admin.sock"), "-log-level", "warn")
	kernel.Stderr = os.Stderr
	kernel.Cancel = func() error { return kernel.Process.Signal(os.Interrupt) }
	if err := kernel.Start(); err != nil {
		return err
	}
	defer func() {
		cancel() // interrupts the kernel
		_ = kernel.Wait()
	}()
	// The baseline: the same plugin binary serving its handler in-process
	// with net/http, no kernel in between.
	base := exec.CommandContext(ctx, hello)
	base.Env = append(os.Environ(), fmt.Sprintf("SWITCHYARD_STANDALONE=127.0.0.1:%d", bport))
	base.Stderr = os.Stderr
	if err := base.Start(); err != nil {
		return err
	}
	defer func() {
		cancel()
		_ = base.Wait()
	}()

	// The in-process baselines of the body and DNS runs: probe and zone
	// serving their handlers themselves.
	for _, b := range []struct{ bin, env, settings string }{
		{probe, fmt.Sprintf("SWITCHYARD_STANDALONE=127.0.0.1:%d", ports[1]), "{}"},
		{zone, fmt.Sprintf("SWITCHYARD_STANDALONE_DNS=127.0.0.1:%d", ports[3]), fmt.Sprintf(`{"file":%q}`, zoneFile)},
	} {
		cmd := exec.CommandContext(ctx, b.bin)
		cmd.Env = append(os.Environ(), b.env, "SWITCHYARD_SETTINGS="+b.settings)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		defer func() {
			cancel()
			_ = cmd.Wait()
		}()
	}

	kurl := fmt.Sprintf("http://127.0.0.1:%d/", kport)
	burl := fmt.Sprintf("http://127.0.0.1:%d/", bport)
	for _, u := range []string{kurl, burl} {
		if err := waitAnswer(u, "hello from", 30*time.Second); err != nil {
			return err
		}
	}

	// Warm both up, then measure them in alternation.
	for _, u := range []string{kurl, burl} {
		if _, err := wrk(u, "warm-up", 2*time.Second, conns, threads); err != nil {
			return err
		}
	}
	ppid, err := pluginPID(root, filepath.Join(tmp, "admin.sock"), "hello")
	if err != nil {
		return err
	}
	pids := [2][]int{{kernel.Process.Pid, ppid}, {base.Process.Pid}}
	var p wrkPair
	if p, err = wrkAlternate([2]string{kurl, burl}, [2]string{"hello through the plugin", "hello in-process (net/http)"}, duration, conns, threads, pids); err != nil {
		return err
	}
	res.HTTP, res.Ratio, res.RatioRounds = p.runs, p.ratio, p.rounds
	res.HTTPCPU = &CPUResult{Kernel: p.cpu[0][0], Plugin: p.cpu[0][1], InProcess: p.cpu[1][0]}

	if p, err = benchSCGI(ctx, tmp, duration, conns, threads); err != nil {
		return err
	}
	res.SCGI, res.SCGIRatio, res.SCGIRatioRounds = p.runs, p.ratio, p.rounds

	// Bodies of 1 and 16 KiB: probe's /big through the kernel and in-process.
	for _, n := range []int{1 << 10, 16 << 10} {
		urls := []string{
			fmt.Sprintf("http://127.0.0.1:%d/big?bytes=%d", ports[0], n),
			fmt.Sprintf("http://127.0.0.1:%d/big?bytes=%d", ports[1], n),
		}
		for _, u := range urls {
			if err := waitAnswer(u, "0123456789abcdef", 30*time.Second); err != nil {
				return err
			}
			if _, err := wrk(u, "warm-up", 2*time.Second, conns, threads); err != nil {
				return err
			}
		}
		names := [2]string{
			fmt.Sprintf("probe %d KiB body through the plugin", n>>10),
			fmt.Sprintf("probe %d KiB body in-process (net/http)", n>>10),
		}
		if p, err = wrkAlternate([2]string(urls), names, duration, conns, threads, [2][]int{}); err != nil {
			return err
		}
		res.Bodies = append(res.Bodies, BodyResult{Bytes: n, Runs: p.runs, Ratio: p.ratio, RatioRounds: p.rounds})
	}

	// DNS: zone through the kernel against zone in-process with miekg/dns.
	if _, err := exec.LookPath("dnsperf"); err != nil {
		return errors.New("dnsperf is not installed (Debian: apt-get install dnsperf)")
	}
	dnsPorts := [2]int{ports[2], ports[3]}
	for _, port := range dnsPorts {
		if err := waitDNS(port, 30*time.Second); err != nil {
			return err
		}
	}
	var dns [2][]DNSResult
	res.DNSRatioRounds, err = alternate(duration, func(side int, d time.Duration) (float64, error) {
		r, err := dnsperf(tmp, dnsPorts[side], [2]string{"zone through the plugin", "zone in-process (miekg/dns)"}[side], d)
		dns[side] = append(dns[side], r)
		return r.QPS, err
	})
	if err != nil {
		return err
	}
	res.DNS = []DNSResult{mergeDNS(dns[0]), mergeDNS(dns[1])}
	res.DNSRatio = median(res.DNSRatioRounds)

	versions := []string{"bench-b", "bench-a"}
	for i := range swaps {
		v := versions[i%2]
		staged := exe + ".staged"
		if err := copyFile(alt[v], staged); err != nil {
			return err
		}
		t0 := time.Now()
		if err := os.Rename(staged, exe); err != nil {
			return err
		}
		if err := waitAnswer(kurl, "hello from "+v+" ", 30*time.Second); err != nil {
			return fmt.Errorf("swap %d: %w", i+1, err)
		}
		res.Swap.AllMS = append(res.Swap.AllMS, ms(time.Since(t0)))
		time.Sleep(300 * time.Millisecond)
	}
	res.Swap.summarize()

	// In place: the running version's file rewritten (the kernel runs a
	// snapshot, so this is allowed), timed from the end of the last write.
	for i := range swaps / 2 {
		// Continue the alternation, so that each rewrite brings the
		// version that is not running, whatever the count of renames.
		v := versions[(swaps+i)%2]
		b, err := os.ReadFile(alt[v])
		if err != nil {
			return err
		}
		f, err := os.OpenFile(exe, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		for off := 0; off < len(b); off += 1 << 20 {
			if _, err := f.Write(b[off:min(off+1<<20, len(b))]); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := waitAnswer(kurl, "hello from "+v+" ", 30*time.Second); err != nil {
			return fmt.Errorf("in-place swap %d: %w", i+1, err)
		}
		res.InPlace.AllMS = append(res.InPlace.AllMS, ms(time.Since(t0)))
		time.Sleep(300 * time.Millisecond)
	}
	res.InPlace.summarize()
	return nil
}

func (s *SwapResult) summarize() {
	s.Count = len(s.AllMS)
	sorted := slices.Clone(s.AllMS)
	slices.Sort(sorted)
	if n := len(sorted); n > 0 {
		s.MedianMS = sorted[n/2]
		if n%2 == 0 {
			s.MedianMS = (sorted[n/2-1] + sorted[n/2]) / 2
		}
		s.MaxMS = sorted[n-1]
	}
}

func report(w io.Writer, r Results, d time.Duration, conns int) {
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
	if r.GOMAXPROCS > 0 {
		fmt.Fprintf(w, "GOMAXPROCS=%d for the kernel, its plugins and the standalone baselines\n", r.GOMAXPROCS)
	}
	if len(r.HTTP) > 0 {
		reportHTTP(w, r, d, conns)
	}
	if l := r.Lines; l != nil {
		reportLines(w, l, d)
	}
}

func reportHTTP(w io.Writer, r Results, d time.Duration, conns int) {
	fmt.Fprintf(w, "wrk: %d keep-alive connections, %v per side in %d rounds that alternate which side goes first\n\n", conns, d, rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tREQ/S\tP50\tP99\tREQUESTS\tERRORS")
	for _, h := range r.HTTP {
		fmt.Fprintf(tw, "%s\t%.0f\t%.2fms\t%.2fms\t%d\t%d\n", h.Name, h.RequestsSec, h.P50ms, h.P99ms, h.Requests, h.Errors)
	}
	for _, h := range r.SCGI {
		fmt.Fprintf(tw, "%s\t%.0f\t%.2fms\t%.2fms\t%d\t%d\n", h.Name, h.RequestsSec, h.P50ms, h.P99ms, h.Requests, h.Errors)
	}
	for _, b := range r.Bodies {
		for _, h := range b.Runs {
			fmt.Fprintf(tw, "%s\t%.0f\t%.2fms\t%.2fms\t%d\t%d\n", h.Name, h.RequestsSec, h.P50ms, h.P99ms, h.Requests, h.Errors)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nratios are the median of the rounds' (in brackets)\n")
	fmt.Fprintf(w, "ratio HTTP plugin/in-process: %.2f %s (p99 %.2fms vs %.2fms)\n", r.Ratio, roundsString(r.RatioRounds), r.HTTP[0].P99ms, r.HTTP[1].P99ms)
	if c := r.HTTPCPU; c != nil {
		fmt.Fprintf(w, "CPU per hello request: kernel %.1fµs + plugin %.1fµs = %.1fµs, in-process %.1fµs (load generator not counted)\n",
			c.Kernel, c.Plugin, c.Kernel+c.Plugin, c.InProcess)
	}
	for _, b := range r.Bodies {
		fmt.Fprintf(w, "ratio HTTP %d KiB body plugin/in-process: %.2f %s (p99 %.2fms vs %.2fms)\n", b.Bytes>>10, b.Ratio, roundsString(b.RatioRounds), b.Runs[0].P99ms, b.Runs[1].P99ms)
	}
	if len(r.DNS) > 0 {
		fmt.Fprintf(w, "\ndnsperf: UDP, 4 clients, 200 outstanding queries, %v per side in %d rounds\n", d, rounds)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tQUERIES/S\tAVG LATENCY\tCOMPLETED\tLOST")
		for _, q := range r.DNS {
			fmt.Fprintf(tw, "%s\t%.0f\t%.2fms\t%d\t%d\n", q.Name, q.QPS, q.AvgLatency, q.Completed, q.Lost)
		}
		tw.Flush()
		fmt.Fprintf(w, "ratio DNS plugin/in-process: %.2f %s\n\n", r.DNSRatio, roundsString(r.DNSRatioRounds))
	}
	fmt.Fprintf(w, "ratio SCGI nginx→kernel→plugin / nginx→in-process responder: %.2f %s\n", r.SCGIRatio, roundsString(r.SCGIRatioRounds))
	fmt.Fprintf(w, "swap (rename to new version answering), %d swaps: median %.0fms, max %.0fms\n",
		r.Swap.Count, r.Swap.MedianMS, r.Swap.MaxMS)
	if r.InPlace.Count > 0 {
		fmt.Fprintf(w, "swap (in-place rewrite, from its last write, 200ms debounce included), %d swaps: median %.0fms, max %.0fms\n",
			r.InPlace.Count, r.InPlace.MedianMS, r.InPlace.MaxMS)
	}
}

func reportLines(w io.Writer, l *LineResults, d time.Duration) {
	fmt.Fprintf(w, "\nline round trips: 50 clients in lock step, %v per side in %d rounds\n", d, rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tROUND TRIPS/S\tROUND TRIPS\tERRORS")
	for _, r := range l.Line {
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%d\n", r.Name, r.PerSec, r.RoundTrips, r.Errors)
	}
	tw.Flush()
	fmt.Fprintf(w, "ratio line plugin/in-process: %.2f %s\n", l.LineRatio, roundsString(l.LineRatioRounds))
	if len(l.SMTP) > 0 {
		fmt.Fprintf(w, "\nsmtp-source: %d messages of 4 KiB, %d sessions in parallel\n", l.SMTP[0].Messages, l.SMTP[0].Sessions)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tMESSAGES/S\tSECONDS")
		for _, r := range l.SMTP {
			fmt.Fprintf(tw, "%s\t%.0f\t%.2f\n", r.Name, r.PerSec, r.Seconds)
		}
		tw.Flush()
		fmt.Fprintf(w, "ratio smtp plugin/smtp-sink: %.2f\n", l.SMTPRatio)
	}
	if i := l.Idle; i.Conns > 0 {
		fmt.Fprintf(w, "\nkernel RSS: %d KiB idle, %d KiB with %d idle line connections: %.0f bytes (%.1f KiB) per connection\n",
			i.IdleKiB, i.LoadedKiB, i.Conns, i.PerConnBytes, i.PerConnBytes/1024)
	}
}

var (
	reqSec  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	total   = regexp.MustCompile(`(\d+) requests in`)
	pct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	sockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	non2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func wrk(url, name string, d time.Duration, conns, threads int) (WrkResult, error) {
	out, err := exec.Command("wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", url).CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	s := string(out)
	r := WrkResult{Name: name}
	if m := reqSec.FindStringSubmatch(s); m != nil {
		r.RequestsSec, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := total.FindStringSubmatch(s); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range pct.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if m[1] == "50" {
			r.P50ms = v
		} else {
			r.P99ms = v
		}
	}
	if m := sockErr.FindStringSubmatch(s); m != nil {
		for _, x := range m[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.Errors += n
		}
	}
	if m := non2xx.FindStringSubmatch(s); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	if r.RequestsSec == 0 {
		return r, fmt.Errorf("could not read wrk's output:\n%s", s)
	}
	return r, nil
}

// waitAnswer polls url until its body contains want.
func waitAnswer(url, want string, d time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	for {
		res, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(b), want) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %q within %v (last error %v)", url, want, d, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// freePort returns a loopback port free for both TCP and UDP at the time of
// asking: the DNS runs listen on both.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no loopback port free for both TCP and UDP")
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func machine() string {
	n := 0
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		model := ""
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "processor") {
				n++
			}
			if model == "" && strings.HasPrefix(sc.Text(), "model name") {
				model = strings.TrimSpace(strings.SplitN(sc.Text(), ":", 2)[1])
			}
		}
		f.Close()
		return fmt.Sprintf("%d CPUs, %s", n, model)
	}
	return "unknown"
}

// rounds is how many rounds a comparison is split into (-rounds).
var rounds = 5

// gomaxprocs is -gomaxprocs: when above 0, the GOMAXPROCS of the kernel,
// its plugins and the standalone baselines. The benchmark's own process,
// which runs the Go load generators and the SCGI and echo baselines, keeps
// Go's default.
var gomaxprocs int

// tuneConfig gives each plugin of a kernel config GOMAXPROCS=gomaxprocs,
// when set: every plugin entry has a path line, and nothing else does.
func tuneConfig(cfg string) string {
	if gomaxprocs <= 0 {
		return cfg
	}
	env := fmt.Sprintf("env = { GOMAXPROCS = %q }", strconv.Itoa(gomaxprocs))
	lines := strings.Split(cfg, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "path = ") {
			lines[i] = l + "\n" + env
		}
	}
	return strings.Join(lines, "\n")
}

// alternate measures the two sides of a comparison, 0 through the kernel
// and 1 its baseline, in rounds that alternate which side goes first, each
// run an equal share of d, so that the drift of a shared machine (this
// one's speed wanders by ±15% over minutes) falls on both sides alike.
// measure runs one side for a while and returns its rate. alternate
// returns each round's ratio, side 0's rate over side 1's.
func alternate(d time.Duration, measure func(side int, d time.Duration) (float64, error)) ([]float64, error) {
	n := max(rounds, 1)
	each := max(d/time.Duration(n), time.Second).Truncate(time.Second)
	ratios := make([]float64, 0, n)
	for i := range n {
		var rate [2]float64
		for _, side := range [2]int{i % 2, 1 - i%2} {
			r, err := measure(side, each)
			if err != nil {
				return nil, err
			}
			rate[side] = r
		}
		ratios = append(ratios, rate[0]/rate[1])
	}
	return ratios, nil
}

// wrkPair is a comparison by wrk: each side's runs merged, and the ratio
// of the rounds'.
type wrkPair struct {
	runs   []WrkResult  // side 0, side 1
	ratio  float64      // the median of rounds
	rounds []float64    // each round's ratio
	cpu    [2][]float64 // when measured: µs of CPU per request of each side's processes
}

// wrkAlternate compares urls[0] (through the kernel) with urls[1] (its
// baseline) in alternating rounds.
// It also measures the CPU time the processes pids[side] spend on each
// side's requests (none for a side without pids).
func wrkAlternate(urls, names [2]string, d time.Duration, conns, threads int, pids [2][]int) (wrkPair, error) {
	var runs [2][]WrkResult
	cpu := [2][]time.Duration{make([]time.Duration, len(pids[0])), make([]time.Duration, len(pids[1]))}
	ratios, err := alternate(d, func(side int, d time.Duration) (float64, error) {
		before := cpuTimes(pids[side])
		r, err := wrk(urls[side], names[side], d, conns, threads)
		for i, t := range cpuTimes(pids[side]) {
			cpu[side][i] += t - before[i]
		}
		runs[side] = append(runs[side], r)
		return r.RequestsSec, err
	})
	if err != nil {
		return wrkPair{}, err
	}
	p := wrkPair{runs: []WrkResult{mergeWrk(runs[0]), mergeWrk(runs[1])}, ratio: median(ratios), rounds: ratios}
	for side := range cpu {
		for _, t := range cpu[side] {
			p.cpu[side] = append(p.cpu[side], float64(t.Microseconds())/float64(max(p.runs[side].Requests, 1)))
		}
	}
	return p, nil
}

// cpuTimes is the CPU time (user and system) each process of pids has
// used so far, from /proc; 0 for one that is gone.
func cpuTimes(pids []int) []time.Duration {
	times := make([]time.Duration, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command, which is in parentheses and
		// may hold anything: state is the first, utime and stime the
		// 12th and 13th (proc(5)), in USER_HZ ticks of 10 ms on Linux.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		times[i] = time.Duration(u+st) * 10 * time.Millisecond
	}
	return times
}

// pluginPID asks the kernel behind the admin socket for the pid of its
// plugin slot's current process.
func pluginPID(root, socket, slot string) (int, error) {
	out, err := exec.Command(filepath.Join(root, "bin", "switchyard"), "ctl", "-socket", socket, "-json", "plugins").Output()
	if err != nil {
		return 0, fmt.Errorf("ctl plugins: %w", err)
	}
	var reply struct {
		Data []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return 0, fmt.Errorf("ctl plugins: %w", err)
	}
	for _, p := range reply.Data {
		if p.Name == slot && p.PID > 0 {
			return p.PID, nil
		}
	}
	return 0, fmt.Errorf("ctl plugins: no process for %s", slot)
}

// mergeWrk sums up runs of one side.
func mergeWrk(runs []WrkResult) WrkResult {
	m := WrkResult{Name: runs[0].Name}
	var p50, p99 []float64
	for _, r := range runs {
		m.RequestsSec += r.RequestsSec / float64(len(runs))
		m.Requests += r.Requests
		m.Errors += r.Errors
		p50, p99 = append(p50, r.P50ms), append(p99, r.P99ms)
	}
	m.P50ms, m.P99ms = median(p50), median(p99)
	return m
}

// mergeDNS sums up dnsperf runs of one side.
func mergeDNS(runs []DNSResult) DNSResult {
	m := DNSResult{Name: runs[0].Name}
	var lat []float64
	for _, r := range runs {
		m.QPS += r.QPS / float64(len(runs))
		m.Completed += r.Completed
		m.Lost += r.Lost
		lat = append(lat, r.AvgLatency)
	}
	m.AvgLatency = median(lat)
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func roundsString(ratios []float64) string {
	parts := make([]string, len(ratios))
	for i, r := range ratios {
		parts[i] = strconv.FormatFloat(r, 'f', 2, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
