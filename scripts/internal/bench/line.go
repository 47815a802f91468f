package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LineResult is one line round-trip run: clients in lock step, each sending
// a line and waiting for its answer.
type LineResult struct {
	Name       string  `json:"name"`
	RoundTrips int64   `json:"round_trips"`
	PerSec     float64 `json:"per_sec"`
	Errors     int64   `json:"errors"`
}

// IdleResult is the kernel's resident memory at idle and with many idle line
// connections open.
type IdleResult struct {
	Conns        int     `json:"conns"`
	IdleKiB      int64   `json:"idle_rss_kib"`
	LoadedKiB    int64   `json:"loaded_rss_kib"`
	PerConnBytes float64 `json:"per_conn_bytes"`
}

// SMTPResult is one smtp-source run.
type SMTPResult struct {
	Name     string  `json:"name"`
	Messages int     `json:"messages"`
	Sessions int     `json:"sessions"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"per_sec"`
}

// lineRoundTrips runs clients against addr for d: each sends "c I n N" and
// reads one line back, whose first field must be "#N". It returns the
// round trips completed.
func lineRoundTrips(name, addr string, greeting bool, clients int, d time.Duration) LineResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var n, errs atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			if greeting {
				if _, err := r.ReadString('\n'); err != nil {
					errs.Add(1)
					return
				}
			}
			for k := 1; ctx.Err() == nil; k++ {
				if _, err := fmt.Fprintf(c, "c%d n%d\r\n", i, k); err != nil {
					errs.Add(1)
					return
				}
				s, err := r.ReadString('\n')
				if err != nil || !strings.HasPrefix(s, "#"+strconv.Itoa(k)+" ") {
					errs.Add(1)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return LineResult{Name: name, RoundTrips: n.Load(), PerSec: float64(n.Load()) / d.Seconds(), Errors: errs.Load()}
}

// echoServer is the in-process baseline of the line benchmark: a TCP server
// that answers each line as probe does ("#N echo: LINE"), with a goroutine
// and a bufio.Reader per connection and nothing in between.
func echoServer() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				w := bufio.NewWriter(c)
				for n := 1; ; n++ {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(w, "#%d echo: %s", n, line)
					if w.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }, nil
}

// rssKiB reads a process's resident set size.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// idleConns measures the kernel's RSS, opens n connections to addr that
// each read their greeting and then sit idle, and measures again.
func idleConns(pid int, addr string, n int) (IdleResult, error) {
	res := IdleResult{Conns: n}
	settle := func() (int64, error) {
		// Let the kernel's collector run; RSS is read after the heap has
		// settled, as an operator would see it a few seconds later.
		time.Sleep(3 * time.Second)
		return rssKiB(pid)
	}
	var err error
	if res.IdleKiB, err = settle(); err != nil {
		return res, err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 256)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return res, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(buf); err != nil {
			return res, fmt.Errorf("greeting %d: %w", i, err)
		}
	}
	if res.LoadedKiB, err = settle(); err != nil {
		return res, err
	}
	res.PerConnBytes = float64(res.LoadedKiB-res.IdleKiB) * 1024 / float64(n)
	return res, nil
}

// smtpSource sends messages with postfix's smtp-source to addr and times
// the run.
func smtpSource(name, addr string, messages, sessions int) (SMTPResult, error) {
	t0 := time.Now()
	out, err := exec.Command("smtp-source", "-c", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages),
		"-l", "4096", "-f", "bench@example.test", "-t", "sink@example.test", addr).CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return SMTPResult{}, fmt.Errorf("smtp-source %s: %v\n%s", addr, err, out)
	}
	return SMTPResult{Name: name, Messages: messages, Sessions: sessions, Seconds: d.Seconds(), PerSec: float64(messages) / d.Seconds()}, nil
}

// smtpSink starts postfix's smtp-sink on a free port: the baseline SMTP
// receiver, which accepts and discards.
func smtpSink(ctx context.Context) (addr string, err error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"-c", addr, "256"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // it refuses to run as root
	}
	cmd := exec.CommandContext(ctx, "smtp-sink", args...)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("smtp-sink did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lineSections runs the line, idle-memory and SMTP measurements against a
// kernel of their own (probe and smtp on line listeners).
func lineSections(ctx context.Context, root, tmp string, d time.Duration, idle, smtpMsgs int) (*LineResults, error) {
	lport, err := freePort()
	if err != nil {
		return nil, err
	}
	sport, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, "line")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`
[plugins.probe]
path = %q

[plugins.smtp]
path = %q

[[listeners]]
name = "lines"
protocol = "line"
address = "127.0.0.1:%d"
plugin = "probe"
max_connections = 20000     # the idle measurement opens 10,000

[[listeners]]
name = "mail"
protocol = "line"
address = "127.0.0.1:%d"
plugin = "smtp"
`, filepath.Join(root, "bin", "plugins", "probe"), filepath.Join(root, "bin", "plugins", "smtp"), lport, sport)
	if err := os.WriteFile(filepath.Join(dir, "line.toml"), []byte(tuneConfig(cfg)), 0o644); err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kernel := exec.CommandContext(kctx, filepath.Join(root, "bin", "switchyard"), "serve",
		"-config", filepath.Join(dir, "line.toml"), "-data", filepath.Join(dir, "state"),
		"-socket", filepath.Join(dir, "admin.sock"), "-log-level", "warn")
	kernel.Stderr = os.Stderr
	kernel.Cancel = func() error { return kernel.Process.Signal(os.Interrupt) }
	if err := kernel.Start(); err != nil {
		return nil, err
	}
	defer func() {
		cancel()
		_ = kernel.Wait()
	}()
	laddr := fmt.Sprintf("127.0.0.1:%d", lport)
	if err := waitLine(laddr, "ready", 30*time.Second); err != nil {
		return nil, err
	}
	res := &LineResults{}
	eaddr, stopEcho, err := echoServer()
	if err != nil {
		return nil, err
	}
	defer stopEcho()
	lineRoundTrips("warm-up", laddr, true, 50, 2*time.Second)
	var runs [2][]LineResult
	res.LineRatioRounds, err = alternate(d, func(side int, d time.Duration) (float64, error) {
		r := [2]func() LineResult{
			func() LineResult { return lineRoundTrips("line echo through probe", laddr, true, 50, d) },
			func() LineResult { return lineRoundTrips("line echo in-process", eaddr, false, 50, d) },
		}[side]()
		runs[side] = append(runs[side], r)
		return r.PerSec, nil
	})
	if err != nil {
		return nil, err
	}
	for _, rs := range runs {
		m := LineResult{Name: rs[0].Name}
		for _, r := range rs {
			m.RoundTrips += r.RoundTrips
			m.Errors += r.Errors
			m.PerSec += r.PerSec / float64(len(rs))
		}
		res.Line = append(res.Line, m)
	}
	res.LineRatio = median(res.LineRatioRounds)

	if _, err := exec.LookPath("smtp-source"); err == nil {
		sinkAddr, err := smtpSink(kctx)
		if err != nil {
			return nil, err
		}
		saddr := fmt.Sprintf("127.0.0.1:%d", sport)
		if _, err := smtpSource("warm-up", saddr, 200, 10); err != nil {
			return nil, err
		}
		k, err := smtpSource("smtp plugin (stored, fsync)", saddr, smtpMsgs, 20)
		if err != nil {
			return nil, err
		}
		b, err := smtpSource("postfix smtp-sink (discards)", sinkAddr, smtpMsgs, 20)
		if err != nil {
			return nil, err
		}
		res.SMTP = []SMTPResult{k, b}
		res.SMTPRatio = k.PerSec / b.PerSec
	} else {
		fmt.Fprintln(os.Stderr, "bench: smtp-source not installed (Debian: postfix); SMTP skipped")
	}

	if idle > 0 {
		if res.Idle, err = idleConns(kernel.Process.Pid, laddr, idle); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// LineResults are the line-protocol measurements.
type LineResults struct {
	Line            []LineResult `json:"line"`
	LineRatio       float64      `json:"line_ratio"` // the median of LineRatioRounds
	LineRatioRounds []float64    `json:"line_ratio_rounds"`
	SMTP            []SMTPResult `json:"smtp,omitempty"`
	SMTPRatio       float64      `json:"smtp_ratio,omitempty"`
	Idle            IdleResult   `json:"idle"`
}

// waitLine dials addr until it greets with a line containing want.
func waitLine(addr, want string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			s, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.Contains(s, want) {
				return nil
			}
			err = rerr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not greet with %q within %v (last error %v)", addr, want, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
