package kernel

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// limitsConfig serves probe on one listener of each protocol, each with
// the extra keys given for its protocol.
func limitsConfig(extra map[string]string) string {
	cfg := `
[plugins.probe]
path = "plugins/probe"
start_timeout = "10s"
drain_timeout = "10s"
call_timeout = "5s"
`
	for _, l := range []struct{ name, protocol string }{{"web", "http"}, {"gateway", "scgi"}, {"lines", "line"}, {"dns", "dns"}} {
		cfg += fmt.Sprintf(`
[[listeners]]
name = %q
protocol = %q
address = "127.0.0.1:0"
plugin = "probe"
%s
`, l.name, l.protocol, extra[l.protocol])
	}
	return cfg
}

// listenerInfo returns the row of `ctl listeners` for name, as the admin
// socket gives it.
func (tk *testKernel) listenerInfo(name string) ListenerInfo {
	tk.t.Helper()
	r := tk.ctl("listeners")
	var ls []ListenerInfo
	if err := json.Unmarshal(r.Data, &ls); err != nil || !r.OK {
		tk.t.Fatalf("listeners: %s %v", r.Data, err)
	}
	for _, l := range ls {
		if l.Name == name {
			return l
		}
	}
	tk.t.Fatalf("no listener %q in %s", name, r.Data)
	return ListenerInfo{}
}

// dialKernel connects to a listener, closing the connection when t ends.
func dialKernel(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedAtOnce fails t unless the peer closes c without sending a byte
// before the test's deadline.
func closedAtOnce(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read %d bytes, %v: want the connection closed at once", n, err)
	}
}

// scgiRequest encodes an SCGI request with the given body.
func scgiRequest(method, uri, body string) []byte {
	var h bytes.Buffer
	for _, kv := range [][2]string{{"CONTENT_LENGTH", strconv.Itoa(len(body))}, {"SCGI", "1"}, {"REQUEST_METHOD", method}, {"REQUEST_URI", uri}} {
		h.WriteString(kv[0] + "\x00" + kv[1] + "\x00")
	}
	return fmt.Appendf(nil, "%d:%s,%s", h.Len(), h.Bytes(), body)
}

// scgiDo sends raw on a new connection to addr and returns the answer's
// Status code and body.
func scgiDo(t testing.TB, addr string, raw []byte) (int, string, error) {
	t.Helper()
	c := dialKernel(t, addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(raw); err != nil {
		return 0, "", err
	}
	return readCGI(c)
}

// readCGI reads a CGI answer up to the end of the connection.
func readCGI(c net.Conn) (int, string, error) {
	all, err := io.ReadAll(c)
	if err != nil {
		return 0, "", err
	}
	head, body, ok := strings.Cut(string(all), "\r\n\r\n")
	if !ok {
		return 0, "", fmt.Errorf("no CGI head in %q", all)
	}
	for line := range strings.SplitSeq(head, "\r\n") {
		if v, ok := strings.CutPrefix(line, "Status: "); ok {
			code, err := strconv.Atoi(strings.Fields(v)[0])
			return code, body, err
		}
	}
	return 0, "", fmt.Errorf("no Status in %q", head)
}

// httpOn is one keep-alive HTTP connection spoken by hand.
type httpOn struct {
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t testing.TB, addr string) *httpOn {
	c := dialKernel(t, addr)
	return &httpOn{c: c, r: bufio.NewReader(c)}
}

func (h *httpOn) get(path string) (int, string, error) {
	h.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	res, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// dnsTCP asks name over an open DNS-over-TCP connection.
func dnsTCP(c *dns.Conn, name string) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.WriteMsg(q); err != nil {
		return nil, err
	}
	return c.ReadMsg()
}

// held is a connection a test holds open on a listener.
type held struct {
	use   func() error // one exchange; for SCGI, the connection's only one
	close func()
}

// TestMaxConnectionsWired: max_connections bounds each stream listener of
// the kernel (http, scgi, line, dns over TCP): with that many open, a new
// connection is closed at once and `ctl listeners` counts it refused; once
// one closes, a new one is served. A reload changes a line listener's limit
// in place, keeping its sessions.
func TestMaxConnectionsWired(t *testing.T) {
	tk := startKernel(t, limitsConfig(map[string]string{
		"http": "max_connections = 2", "scgi": "max_connections = 2", "line": "max_connections = 2", "dns": "max_connections = 2",
	}), map[string]string{"probe": probeBin(t, "v1")})

	// For each listener, how to open a connection that stays open and is
	// served.
	open := map[string]func(t *testing.T) held{
		"web": func(t *testing.T) held {
			h := dialHTTP(t, tk.bound("web"))
			use := func() error {
				code, body, err := h.get("/")
				if err == nil && (code != 200 || !strings.HasPrefix(body, "probe v1 ")) {
					err = fmt.Errorf("answer %d %q", code, body)
				}
				return err
			}
			if err := use(); err != nil {
				t.Fatal(err)
			}
			return held{use, func() { h.c.Close() }}
		},
		"gateway": func(t *testing.T) held {
			// A front server that has connected and not yet sent its
			// request holds its connection; the answer ends it.
			c := dialKernel(t, tk.bound("gateway"))
			use := func() error {
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := c.Write(scgiRequest("GET", "/", "")); err != nil {
					return err
				}
				code, body, err := readCGI(c)
				if err == nil && (code != 200 || !strings.HasPrefix(body, "probe v1 ")) {
					err = fmt.Errorf("answer %d %q", code, body)
				}
				return err
			}
			return held{use, func() { c.Close() }}
		},
		"lines": func(t *testing.T) held {
			lc := dialLine(t, tk.bound("lines"))
			lc.mustRead()
			use := func() error {
				if err := lc.send("hi"); err != nil {
					return err
				}
				s, err := lc.readLine()
				if _, _, _, text, ok := probeLine(s); err == nil && (!ok || text != "hi") {
					err = fmt.Errorf("answer %q", s)
				}
				return err
			}
			return held{use, func() { lc.c.Close() }}
		},
		"dns": func(t *testing.T) held {
			c := &dns.Conn{Conn: dialKernel(t, tk.bound("dns"))}
			use := func() error {
				r, err := dnsTCP(c, "limit.example.")
				if err == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1) {
					err = fmt.Errorf("answer %v", r)
				}
				return err
			}
			if err := use(); err != nil {
				t.Fatal(err)
			}
			return held{use, func() { c.Close() }}
		},
	}
	for _, name := range []string{"web", "gateway", "lines", "dns"} {
		t.Run(name, func(t *testing.T) {
			a, b := open[name](t), open[name](t)
			testutil.WaitFor(t, 10*time.Second, "two connections open", func() bool { return tk.listenerInfo(name).Connections == 2 })
			closedAtOnce(t, dialKernel(t, tk.bound(name)))
			if li := tk.listenerInfo(name); li.Refused != 1 || li.Accepted != 2 {
				t.Fatalf("after one refusal: %+v", li)
			}
			// The open ones are still served.
			if err := a.use(); err != nil {
				t.Fatalf("an open connection: %v", err)
			}
			// One closes; a new one is served.
			b.close()
			testutil.WaitFor(t, 10*time.Second, "one connection open", func() bool { return tk.listenerInfo(name).Connections <= 1 })
			c := open[name](t)
			if err := c.use(); err != nil {
				t.Fatalf("a connection once one closed: %v", err)
			}
			if li := tk.listenerInfo(name); li.Refused != 1 || li.Accepted != 3 {
				t.Fatalf("at the end: %+v", li)
			}
			a.close()
			c.close()
			testutil.WaitFor(t, 10*time.Second, "no connection open", func() bool { return tk.listenerInfo(name).Connections == 0 })
		})
	}
	if !tk.logs.contains("too many connections") {
		t.Error("no warning about refused connections logged")
	}

	// A reload raises the line listener's limit in place: its sessions keep
	// their connections, and one more is served.
	lc1, lc2 := open["lines"](t), open["lines"](t)
	closedAtOnce(t, dialKernel(t, tk.bound("lines")))
	writeConfig(t, tk, limitsConfig(map[string]string{
		"http": "max_connections = 2", "scgi": "max_connections = 2", "line": "max_connections = 3", "dns": "max_connections = 2",
	}))
	if r := tk.ctl("reload-config"); !r.OK || !strings.Contains(string(r.Data), `"listeners_kept":["web","gateway","lines","dns"]`) {
		t.Fatalf("reload-config: %s %s", r.Data, r.Error)
	}
	lc3 := open["lines"](t)
	for i, h := range []held{lc1, lc2, lc3} {
		if err := h.use(); err != nil {
			t.Fatalf("line session %d after the reload: %v", i+1, err)
		}
	}
	if li := tk.listenerInfo("lines"); li.Refused != 2 || li.Connections != 3 {
		t.Fatalf("lines after the reload: %+v", li)
	}
}

// TestHTTPWriteTimeout: an HTTP client that asks for a large answer and
// never reads it is cut off after write_timeout; the plugin is unharmed and
// the listener serves on.
func TestHTTPWriteTimeout(t *testing.T) {
	tk := startKernel(t, limitsConfig(map[string]string{"http": `write_timeout = "300ms"`}), map[string]string{"probe": probeBin(t, "v1")})
	h := dialHTTP(t, tk.bound("web"))
	// 64 MiB: far more than the sockets' buffers hold.
	if _, err := fmt.Fprintf(h.c, "GET /big?bytes=%d HTTP/1.1\r\nHost: test\r\n\r\n", 64<<20); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the connection cut off", func() bool { return tk.listenerInfo("web").Connections == 0 })
	h.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, h.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the client's connection is still open after %d bytes", n)
	}
	if n >= 64<<20 {
		t.Fatalf("the whole answer arrived (%d bytes)", n)
	}
	code, body, err := dialHTTP(t, tk.bound("web")).get("/")
	if err != nil || code != 200 || !strings.HasPrefix(body, "probe v1 ") {
		t.Fatalf("a request afterwards: %d %q %v", code, body, err)
	}
	if p := tk.plugin("probe"); p.Restarts != 0 {
		t.Fatalf("the plugin restarted: %+v", p)
	}
}

// TestDNSLimitsWired: a dns listener's idle_timeout closes a TCP
// connection without a query, and its max_inflight answers a query beyond
// it SERVFAIL at once.
func TestDNSLimitsWired(t *testing.T) {
	tk := startKernel(t, limitsConfig(map[string]string{"dns": "idle_timeout = \"200ms\"\nmax_inflight = 1"}), map[string]string{"probe": probeBin(t, "v1")})
	addr := tk.bound("dns")

	// idle_timeout: the default is 10s, longer than this test waits.
	idle := &dns.Conn{Conn: dialKernel(t, addr)}
	if r, err := dnsTCP(idle, "first.example."); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("a query: %v %v", r, err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("an idle TCP connection was not closed: %v", err)
	}
	silent := dialKernel(t, addr)
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a TCP connection without a query was not closed: %v", err)
	}

	// max_inflight = 1: while slow.probe. (a second) is answered, other
	// queries get SERVFAIL at once.
	before := tk.listenerInfo("dns").Requests
	slow := make(chan *dns.Msg, 1)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("slow.probe.", dns.TypeTXT)
		r, _, _ := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, addr)
		slow <- r
	}()
	testutil.WaitFor(t, 10*time.Second, "the slow query", func() bool { return tk.listenerInfo("dns").Requests > before })
	c := &dns.Client{Timeout: 10 * time.Second}
	var refused bool
	for !refused {
		q := new(dns.Msg)
		q.SetQuestion("fast.example.", dns.TypeTXT)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			t.Fatal(err)
		}
		refused = r.Rcode == dns.RcodeServerFailure
		select {
		case sr := <-slow:
			if !refused {
				t.Fatalf("no query refused while the slow one (%v) was in flight", sr)
			}
			slow <- sr
		default:
		}
	}
	if r := <-slow; r == nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("the slow query: %v", r)
	}
	q := new(dns.Msg)
	q.SetQuestion("after.example.", dns.TypeTXT)
	if r, _, err := c.Exchange(q, addr); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("a query once the slow one was answered: %v %v", r, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
