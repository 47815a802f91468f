package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// probe answers HTTP requests for diagnostics.
type probe struct {
	version string
	pid     int
	exit    func(code int) // os.Exit, replaced in tests
	// stderr is the process's own standard error, taken before sdk.Serve
	// redirects os.Stderr into go-plugin's stdio stream: a line written
	// there right before exiting reaches the kernel's log, where the stream
	// might lose it.
	stderr io.Writer
	// stdio is where /log writes its line; nil means os.Stderr as it is at
	// the time, which sdk.Serve has redirected into go-plugin's stdio
	// stream.
	stdio io.Writer
	mux   *http.ServeMux

	mu   sync.Mutex
	leak [][]byte // what /grow holds; guarded by mu
}

func exit(code int) { os.Exit(code) }

func newPlugin(version string, exit func(int)) sdk.Plugin {
	return newProbe(version, exit, os.Stderr).plugin()
}

func newProbe(version string, exit func(int), stderr io.Writer) *probe {
	p := &probe{version: version, pid: os.Getpid(), exit: exit, stderr: stderr, mux: http.NewServeMux()}
	p.mux.HandleFunc("/{$}", p.root)
	p.mux.HandleFunc("/slow", p.slow)
	p.mux.Handle("/status/{code}", sdk.CGI(p.status))
	p.mux.Handle("/redirect", sdk.CGI(p.redirect))
	p.mux.Handle("/badcgi", sdk.CGI(p.badCGI))
	p.mux.HandleFunc("/echo", p.echo)
	p.mux.HandleFunc("/crash", p.crash)
	p.mux.HandleFunc("/panic", p.panic)
	p.mux.HandleFunc("/stream", p.stream)
	p.mux.HandleFunc("/big", p.big)
	p.mux.HandleFunc("/trailer", p.trailer)
	p.mux.HandleFunc("/deadline", p.deadline)
	p.mux.HandleFunc("/wait", p.wait)
	p.mux.HandleFunc("/log", p.log)
	p.mux.HandleFunc("/hang", p.hang)
	p.mux.HandleFunc("/grow", p.grow)
	p.mux.HandleFunc("/garbage", p.garbage)
	p.mux.HandleFunc("/flood", p.flood)
	return p
}

// broken reports whether this build is a deliberately bad version: one
// whose version begins "broken" answers every HTTP request with 500 and
// every DNS query with SERVFAIL, the regression a rollback must undo.
func (p *probe) broken() bool { return strings.HasPrefix(p.version, "broken") }

func (p *probe) plugin() sdk.Plugin {
	var h http.Handler = p.mux
	if p.broken() {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, p.id()+": this version is broken", http.StatusInternalServerError)
		})
	}
	return sdk.Plugin{
		Name:          "probe",
		Version:       p.version,
		HTTP:          h,
		DNS:           dns.HandlerFunc(p.serveDNS),
		Line:          probeLine{p},
		LineFailReply: failReply,
		Tick:          p.tick,
	}
}

// serveDNS answers every query, whatever its name and type, with one TXT
// record "probe VERSION pid PID" (TTL 0), so a client can tell which
// generation answered. Two names are for fault tests: crash.probe. makes
// the process exit, and slow.probe. answers after a second or when the
// kernel gives up.
func (p *probe) serveDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if p.broken() {
		m.SetRcode(q, dns.RcodeServerFailure)
		_ = w.WriteMsg(m)
		return
	}
	if len(q.Question) != 1 {
		m.SetRcode(q, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	switch dns.CanonicalName(q.Question[0].Name) {
	case "crash.probe.":
		fmt.Fprintf(p.stderr, "%s: crashing on a DNS query\n", p.id())
		p.exit(2)
	case "slow.probe.":
		select {
		case <-time.After(time.Second):
		case <-sdk.DNSContext(w).Done():
			return
		}
	}
	m.Answer = []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
		Txt: []string{p.id()},
	}}
	if opt := q.IsEdns0(); opt != nil {
		m.SetEdns0(4096, false)
	}
	_ = w.WriteMsg(m)
}

// id is how every answer names this process.
func (p *probe) id() string { return fmt.Sprintf("probe %s pid %d", p.version, p.pid) }

func (p *probe) text(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Probe", p.id())
}

// root answers "probe VERSION pid PID".
func (p *probe) root(w http.ResponseWriter, r *http.Request) {
	p.text(w)
	fmt.Fprintln(w, p.id())
}

// slow answers after ms milliseconds, or 503 when the caller gives up first.
func (p *probe) slow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 {
		http.Error(w, "slow: ms must be a non-negative integer", http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		http.Error(w, "slow: "+r.Context().Err().Error(), http.StatusServiceUnavailable)
		return
	}
	p.text(w)
	fmt.Fprintf(w, "%s slept %dms\n", p.id(), ms)
}

// status answers with the status CODE, as CGI output: a Status header, and
// a Location when the query has one.
func (p *probe) status(out io.Writer, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 999 {
		fmt.Fprint(out, "Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
		fmt.Fprintln(out, "status: CODE must be 200-999")
		return
	}
	fmt.Fprintf(out, "Status: %d %s\r\n", code, http.StatusText(code))
	if loc := r.URL.Query().Get("location"); loc != "" && !strings.ContainsAny(loc, "\r\n") {
		fmt.Fprintf(out, "Location: %s\r\n", loc)
	}
	fmt.Fprintf(out, "Content-Type: text/plain; charset=utf-8\r\nX-Probe: %s\r\n\r\n", p.id())
	if code != http.StatusNoContent && code != http.StatusNotModified {
		fmt.Fprintf(out, "%s status %d\n", p.id(), code)
	}
}

// redirect answers with CGI output that has a Location and no Status, which
// the CGI rules make a 302.
func (p *probe) redirect(out io.Writer, r *http.Request) {
	to := r.URL.Query().Get("to")
	if to == "" || strings.ContainsAny(to, "\r\n") {
		fmt.Fprint(out, "Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
		fmt.Fprintln(out, "redirect: to is required")
		return
	}
	fmt.Fprintf(out, "Location: %s\r\nX-Probe: %s\r\n\r\n", to, p.id())
}

// badCGI writes CGI output with a malformed Status, which the kernel must
// answer with 502 rather than pass on.
func (p *probe) badCGI(out io.Writer, _ *http.Request) {
	fmt.Fprintf(out, "Status: OK\r\nContent-Type: text/plain\r\n\r\n%s must not be seen\n", p.id())
}

// Echo is what /echo answers, as JSON.
type Echo struct {
	Probe            string              `json:"probe"`
	Method           string              `json:"method"`
	URI              string              `json:"uri"`
	Path             string              `json:"path"`
	Query            string              `json:"query"`
	Proto            string              `json:"proto"`
	Host             string              `json:"host"`
	RemoteAddr       string              `json:"remote_addr"`
	Headers          map[string][]string `json:"headers"`
	ContentLength    int64               `json:"content_length"`
	TransferEncoding []string            `json:"transfer_encoding"`
	Body             string              `json:"body"`
	BodyLen          int                 `json:"body_len"`
	BodySHA256       string              `json:"body_sha256"`
	Listener         string              `json:"listener"`
}

// echo answers with the request it saw, as JSON, and with the values of
// its X-Echo header, byte for byte, in its own X-Echo header (JSON would
// mend bytes that are not UTF-8).
func (p *probe) echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "echo: reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	e := Echo{
		Probe:            p.id(),
		Method:           r.Method,
		URI:              r.RequestURI,
		Path:             r.URL.Path,
		Query:            r.URL.RawQuery,
		Proto:            r.Proto,
		Host:             r.Host,
		RemoteAddr:       r.RemoteAddr,
		Headers:          r.Header,
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
		Body:             string(body),
		BodyLen:          len(body),
		BodySHA256:       hex.EncodeToString(sum[:]),
		Listener:         sdk.ListenerFrom(r.Context()),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Probe", p.id())
	if vs := r.Header.Values("X-Echo"); len(vs) > 0 {
		w.Header()["X-Echo"] = vs
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(e)
}

// crash makes the process exit without answering.
func (p *probe) crash(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(p.stderr, "%s: crashing on request\n", p.id())
	p.exit(2)
}

// panic makes the handler panic; the SDK answers 500.
func (p *probe) panic(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("after") == "head" {
		p.text(w)
		fmt.Fprintln(w, p.id())
		w.(http.Flusher).Flush()
	}
	panic("probe: panic on request")
}

// stream writes n lines ms milliseconds apart, flushing each.
func (p *probe) stream(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	p.text(w)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "%s line %d\n", p.id(), i)
		w.(http.Flusher).Flush()
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
}

// big writes bytes bytes of a repeating pattern.
func (p *probe) big(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
	if err != nil || n < 0 {
		http.Error(w, "big: bytes must be a non-negative integer", http.StatusBadRequest)
		return
	}
	p.text(w)
	w.Header().Set("Content-Length", strconv.Itoa(n))
	line := []byte(strings.Repeat("0123456789abcdef", 64))
	for n > 0 {
		k := min(n, len(line))
		if _, err := w.Write(line[:k]); err != nil {
			return
		}
		n -= k
	}
}

// trailer answers with a declared trailer and an undeclared one.
func (p *probe) trailer(w http.ResponseWriter, r *http.Request) {
	p.text(w)
	w.Header().Set("Trailer", "X-Declared")
	fmt.Fprintln(w, p.id())
	w.Header().Set("X-Declared", "declared")
	w.Header().Set(http.TrailerPrefix+"X-Late", "late")
}

// deadline answers how long the request's context has left.
func (p *probe) deadline(w http.ResponseWriter, r *http.Request) {
	p.text(w)
	d, ok := r.Context().Deadline()
	if !ok {
		fmt.Fprintf(w, "%s deadline none\n", p.id())
		return
	}
	fmt.Fprintf(w, "%s deadline %dms\n", p.id(), time.Until(d).Milliseconds())
}

// wait answers once the file named by the query parameter file exists (or
// 503 when the caller gives up first): a request a test holds in flight for
// as long as it needs, and releases without reaching this process again.
func (p *probe) wait(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("file")
	if name == "" {
		http.Error(w, "wait: file is required", http.StatusBadRequest)
		return
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(name); err == nil {
			break
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			http.Error(w, "wait: "+r.Context().Err().Error(), http.StatusServiceUnavailable)
			return
		}
	}
	p.text(w)
	fmt.Fprintf(w, "%s waited for %s\n", p.id(), name)
}

// log writes the query parameter msg into the kernel's log twice: as a
// record through the Host logger, and as a line on standard error.
func (p *probe) log(w http.ResponseWriter, r *http.Request) {
	msg := r.URL.Query().Get("msg")
	if msg == "" {
		http.Error(w, "log: msg is required", http.StatusBadRequest)
		return
	}
	sdk.HostFrom(r.Context()).Logger().Info(msg, "probe", p.id())
	out := p.stdio
	if out == nil {
		out = os.Stderr
	}
	fmt.Fprintln(out, msg)
	p.text(w)
	fmt.Fprintf(w, "%s logged %q\n", p.id(), msg)
}

// hang never answers and ignores its context: a handler stuck for good,
// which only a restart of the process ends.
func (p *probe) hang(w http.ResponseWriter, r *http.Request) {
	select {}
}

// grow allocates mb MiB and keeps it for the life of the process: a leak.
func (p *probe) grow(w http.ResponseWriter, r *http.Request) {
	mb, err := strconv.Atoi(r.URL.Query().Get("mb"))
	if err != nil || mb <= 0 || mb > 4096 {
		http.Error(w, "grow: mb must be 1-4096", http.StatusBadRequest)
		return
	}
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1 // touch every page, so it is resident
	}
	p.mu.Lock()
	p.leak = append(p.leak, b)
	total := 0
	for _, l := range p.leak {
		total += len(l)
	}
	p.mu.Unlock()
	p.text(w)
	fmt.Fprintf(w, "%s holds %d MiB\n", p.id(), total>>20)
}

// garbage writes n bytes of binary junk to standard output, which the
// kernel reads as log lines.
func (p *probe) garbage(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
	if err != nil || n < 0 || n > 64<<20 {
		http.Error(w, "garbage: bytes must be 0-64Mi", http.StatusBadRequest)
		return
	}
	junk := make([]byte, n)
	for i := range junk {
		junk[i] = byte(i*7 + i>>8)
	}
	_, _ = os.Stdout.Write(junk)
	p.text(w)
	fmt.Fprintf(w, "%s wrote %d bytes to stdout\n", p.id(), n)
}

// flood writes n log lines as fast as it can, half on standard error and
// half through the Host logger.
func (p *probe) flood(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("lines"))
	if err != nil || n < 0 || n > 1000000 {
		http.Error(w, "flood: lines must be 0-1000000", http.StatusBadRequest)
		return
	}
	log := sdk.HostFrom(r.Context()).Logger()
	out := p.stdio
	if out == nil {
		out = os.Stderr
	}
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(out, "flood line %d\n", i)
		} else {
			log.Info("flood record", "i", i)
		}
	}
	p.text(w)
	fmt.Fprintf(w, "%s flooded %d lines\n", p.id(), n)
}
