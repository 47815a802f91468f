package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DNSResult is one dnsperf run.
type DNSResult struct {
	Name       string  `json:"name"`
	QPS        float64 `json:"queries_per_sec"`
	Completed  int64   `json:"completed"`
	Lost       int64   `json:"lost"`
	AvgLatency float64 `json:"avg_latency_ms"`
}

// dnsQueries are what dnsperf asks, round robin: answers, a CNAME chain,
// NODATA and NXDOMAIN from the example zone.
var dnsQueries = []string{
	"www.example.test A",
	"www.example.test AAAA",
	"example.test MX",
	"alias.example.test A",
	"mail.example.test TXT",
	"nowhere.example.test A",
	"_sip._tcp.example.test SRV",
	"example.test NS",
}

var (
	dnsQPS       = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	dnsCompleted = regexp.MustCompile(`Queries completed:\s+(\d+)`)
	dnsLost      = regexp.MustCompile(`Queries lost:\s+(\d+)`)
	dnsLatency   = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
)

// dnsperf runs dnsperf against 127.0.0.1:port over UDP for d.
func dnsperf(tmp string, port int, name string, d time.Duration) (DNSResult, error) {
	qfile := filepath.Join(tmp, "queries.txt")
	if err := os.WriteFile(qfile, []byte(strings.Join(dnsQueries, "\n")+"\n"), 0o644); err != nil {
		return DNSResult{}, err
	}
	out, err := exec.Command("dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(port), "-d", qfile,
		"-l", strconv.Itoa(int(d.Seconds())), "-c", "4", "-T", "2", "-q", "200").CombinedOutput()
	if err != nil {
		return DNSResult{}, fmt.Errorf("dnsperf: %v\n%s", err, out)
	}
	s := string(out)
	r := DNSResult{Name: name}
	if m := dnsQPS.FindStringSubmatch(s); m != nil {
		r.QPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := dnsCompleted.FindStringSubmatch(s); m != nil {
		r.Completed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := dnsLost.FindStringSubmatch(s); m != nil {
		r.Lost, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := dnsLatency.FindStringSubmatch(s); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		r.AvgLatency = v * 1000
	}
	if r.QPS == 0 {
		return r, fmt.Errorf("could not read dnsperf's output:\n%s", s)
	}
	return r, nil
}

// waitDNS waits until dig gets an answer from 127.0.0.1:port.
func waitDNS(port int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		out, err := exec.Command("dig", "+short", "+tries=1", "+time=1", "-p", strconv.Itoa(port), "@127.0.0.1", "www.example.test", "A").Output()
		if err == nil && strings.Contains(string(out), "192.0.2.10") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no DNS answer on port %d within %v: %v %s", port, d, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
