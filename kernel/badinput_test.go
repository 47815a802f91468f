package kernel

import (
	"bytes"
	wire "encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The bad-input suite: each protocol's listener gets random bytes,
// oversize everything, truncated and half-closed input and a crowd of
// garbage connections at once. Afterwards the listener must answer a
// normal request, the plugin must not have restarted, and the harness
// checks that no goroutine or file descriptor of the kernel is left behind.

var badSeed = flag.Uint64("badinput.seed", 0, "seed of the bad-input tests' random bytes (0: a new one each run)")

// badRand returns the test's random source, logging its seed so a failure
// can be replayed with -badinput.seed.
func badRand(t *testing.T) *rand.Rand {
	seed := *badSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("random seed %d (replay with -badinput.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x5717c4ad))
}

// randomBytes returns n random bytes without '/', so that no line or
// request can name one of probe's fault paths (/crash, /slow).
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
		if b[i] == '/' {
			b[i] = '?'
		}
	}
	return b
}

// badConfig serves probe on a listener of each protocol, with limits small
// enough that oversize input is cheap to send, and timeouts short enough
// that a client holding a connection does not hold the test.
func badConfig() string {
	return `
[plugins.probe]
path = "plugins/probe"
start_timeout = "10s"
drain_timeout = "5s"
call_timeout = "5s"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
max_body = 65536
max_header_bytes = 16384
read_header_timeout = "1s"
read_timeout = "2s"
idle_timeout = "2s"
write_timeout = "5s"

[[listeners]]
name = "gateway"
protocol = "scgi"
address = "127.0.0.1:0"
plugin = "probe"
timeout = "1s"
max_body = 65536
max_header_bytes = 16384

[[listeners]]
name = "dns"
protocol = "dns"
address = "127.0.0.1:0"
plugin = "probe"
idle_timeout = "1s"

[[listeners]]
name = "lines"
protocol = "line"
address = "127.0.0.1:0"
plugin = "probe"
max_line = 256
idle_timeout = "2s"
max_output = 65536

[[listeners]]
name = "telnet"
protocol = "line"
address = "127.0.0.1:0"
plugin = "probe"
max_line = 256
idle_timeout = "2s"
max_output = 65536
telnet = true
`
}

func startBad(t *testing.T) *testKernel {
	t.Helper()
	return startKernel(t, badConfig(), map[string]string{"probe": probeBin(t, "v1")})
}

// badDeadline bounds every exchange: a listener that holds a bad client
// longer than its timeouts allow fails the test instead of hanging it.
const badDeadline = 15 * time.Second

// inParallel runs f(0) to f(n-1) at once and waits for them: the bad
// clients of a test come together, as they would in the wild, and the
// ones a timeout ends do not add up.
func inParallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// sendRaw writes payload on a new connection to addr while reading what
// comes back, half-closes the connection after the payload when halfClose
// is set, and returns what was read once the server closed its end. A
// server that neither closes nor answers within badDeadline fails t. It
// may run in any goroutine.
// Write errors are expected (the server may close while input is still
// coming) and ignored.
func sendRaw(t *testing.T, addr string, payload []byte, halfClose bool) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Errorf("dial: %v", err)
		return nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(badDeadline))
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := c.Write(payload); err == nil && halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
	})
	got, err := io.ReadAll(c)
	if isTimeout(err) {
		t.Errorf("the server kept a connection open for %v after %d bytes of %s (read %q)", badDeadline, len(payload), clip(payload), clip(got))
	}
	// A write blocked on a server that stopped reading ends with the close.
	c.Close()
	wg.Wait()
	return got
}

// crowd opens n connections to addr at once, each writing what payload(i)
// returns and closing without reading (half of them abruptly, with a
// reset).
func crowd(t *testing.T, addr string, n int, payload func(i int) []byte) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		p := payload(i)
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			c.SetDeadline(time.Now().Add(badDeadline))
			c.Write(p)
			if i%2 == 1 {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		})
	}
	wg.Wait()
}

// clip shortens b for a message.
func clip(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", b[:80], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// checkAlive fails t unless probe has not restarted and the kernel's
// listener counts no connection left open by the bad clients.
func checkAlive(t *testing.T, tk *testKernel, listeners ...string) {
	t.Helper()
	if p := tk.plugin("probe"); p.Restarts != 0 || p.State != "serving" {
		t.Errorf("probe after bad input: %+v", p)
	}
	for _, name := range listeners {
		deadline := time.Now().Add(badDeadline)
		for tk.listenerInfo(name).Connections != 0 {
			if time.Now().After(deadline) {
				t.Errorf("listener %s: %+v connections left open by bad clients", name, tk.listenerInfo(name))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// httpStatus returns the status code of the first HTTP answer in b, or 0.
func httpStatus(b []byte) int {
	rest, ok := bytes.CutPrefix(b, []byte("HTTP/1.1 "))
	if !ok || len(rest) < 3 {
		return 0
	}
	code, _ := strconv.Atoi(string(rest[:3]))
	return code
}

func TestBadInputHTTP(t *testing.T) {
	tk := startBad(t)
	rng := badRand(t)
	addr := tk.bound("web")
	const req = "GET /echo HTTP/1.1\r\nHost: test\r\n"

	// Random bytes, and random bytes after a valid request line.
	var random [][]byte
	for range 20 {
		random = append(random, randomBytes(rng, 1+rng.IntN(8<<10)), append([]byte("GET / HTTP/1.1\r\n"), randomBytes(rng, 1+rng.IntN(4<<10))...))
	}
	inParallel(len(random), func(i int) {
		got := sendRaw(t, addr, random[i], true)
		if code := httpStatus(got); len(got) > 0 && (code < 400 || code == 502 || code == 500) {
			t.Errorf("random input %s answered %s", clip(random[i]), clip(got))
		}
	})

	huge := strings.Repeat("x", 1<<20)
	type httpCase struct {
		name  string
		input string
		want  []int // acceptable status codes, 0 for no answer at all; none: any 4xx, or no answer
	}
	cases := []httpCase{
		{"huge header", req + "X-Big: " + huge + "\r\n\r\n", []int{431}},
		{"many headers", req + strings.Repeat("X-Many: y\r\n", 100000) + "\r\n", []int{431}},
		{"huge request line", "GET /" + huge + " HTTP/1.1\r\nHost: test\r\n\r\n", []int{414, 431}},
		{"huge declared body", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10737418240\r\n\r\n" + huge, []int{413}},
		{"content length past int64", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 99999999999999999999999\r\n\r\n", []int{400}},
		{"huge chunked body", "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("b", 64<<10)), 16) + "0\r\n\r\n", []int{400, 413}},
		{"huge chunk size", "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc", nil},
		{"negative content length", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n", []int{400}},
		{"two content lengths", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", []int{400}},
		{"bad chunk", "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", []int{400}},
		{"unknown transfer encoding", "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked, x\r\n\r\n", []int{400, 501}},
		{"nul in header", req + "X-Nul: a\x00b\r\n\r\n", []int{400}},
		{"space before colon", req + "X-Bad : v\r\n\r\n", []int{400}},
		// RFC 9112 §5.2: reject, or unfold; net/http unfolds, and then
		// the half-close after a whole request may read as the client's
		// going before the answer comes.
		{"obsolete line folding", req + "X-Fold: a\r\n b\r\n\r\n", []int{200, 400, 0}},
		{"no host", "GET / HTTP/1.1\r\n\r\n", []int{400}},
		{"http 2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", []int{505}},
		{"http 0.9", "GET /\r\n\r\n", []int{400, 505}},
		{"bad version", "GET / HTTP/9.9\r\nHost: test\r\n\r\n", []int{400, 505}},
		{"truncated head", "GET / HTTP/1.1\r\nHost: te", nil},
		// A body cut short by a half-close gets a 400, or a closed
		// connection (net/http takes the end of input for the client's
		// going), never a 200.
		{"truncated body", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nabc", []int{400, 0}},
		{"truncated chunked body", "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", []int{400, 0}},
	}
	// Slowloris: requests that stop half way, with the connection held
	// open, are ended by read_header_timeout and read_timeout.
	// Slowloris: requests that stop half way, their connection held
	// open, are ended by read_header_timeout and read_timeout; the rest
	// are half-closed after their input.
	slow := []httpCase{
		{"slow head", "GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ", nil},
		{"slow body", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("s", 70000), []int{400, 413, 0}},
	}
	all := append(cases, slow...)
	inParallel(len(all), func(i int) {
		tc := all[i]
		got := sendRaw(t, addr, []byte(tc.input), i < len(cases))
		if code := httpStatus(got); len(tc.want) > 0 && !slices.Contains(tc.want, code) || len(tc.want) == 0 && len(got) > 0 && (code < 400 || code >= 500) {
			t.Errorf("%s: answered %s, want one of %v", tc.name, clip(got), tc.want)
		}
	})

	crowd(t, addr, 200, func(i int) []byte {
		if i%3 == 0 {
			return []byte("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("z", i))
		}
		return randomBytes(rng, 1+rng.IntN(2048))
	})

	checkAlive(t, tk, "web")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	if body := mustGet(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, tk.url("web")+"/"); !strings.HasPrefix(body, "probe v1 ") {
		t.Fatalf("a normal request after the bad ones: %q", body)
	}
}

// TestHeaderNotUTF8 sends header values that are not UTF-8, which HTTP
// allows (obs-text, RFC 9110 §5.5): they must reach the plugin, and come
// back in its answer, byte for byte. (Protocol Buffers' strings must be
// UTF-8, and proto.Marshal refused such a request with a 502.)
func TestHeaderNotUTF8(t *testing.T) {
	tk := startBad(t)
	for _, v := range []string{"caf\xe9", "\xff\xfe", "ok \xc3\xa9 then \xc3"} {
		got := sendRaw(t, tk.bound("web"), []byte("GET /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Echo: "+v+"\r\n\r\n"), false)
		if code := httpStatus(got); code != 200 || !bytes.Contains(got, []byte("\r\nX-Echo: "+v+"\r\n")) {
			t.Errorf("X-Echo %q: answered %q", v, clip(got))
		}
	}
}

func TestBadInputSCGI(t *testing.T) {
	tk := startBad(t)
	rng := badRand(t)
	addr := tk.bound("gateway")

	// scgiStatus returns the Status code of a CGI answer, or 0.
	scgiStatus := func(b []byte) int {
		rest, ok := bytes.CutPrefix(b, []byte("Status: "))
		if !ok || len(rest) < 3 {
			return 0
		}
		code, _ := strconv.Atoi(string(rest[:3]))
		return code
	}
	header := func(pairs ...string) string {
		var b strings.Builder
		for _, p := range pairs {
			b.WriteString(p)
			b.WriteByte(0)
		}
		return strconv.Itoa(b.Len()) + ":" + b.String() + ","
	}
	var random [][]byte
	for range 20 {
		random = append(random, randomBytes(rng, 1+rng.IntN(8<<10)), append([]byte("70:CONTENT_LENGTH\x000\x00"), randomBytes(rng, 1+rng.IntN(256))...))
	}
	inParallel(len(random), func(i int) {
		got := sendRaw(t, addr, random[i], true)
		if code := scgiStatus(got); len(got) > 0 && code != 400 {
			t.Errorf("random input %s answered %s", clip(random[i]), clip(got))
		}
	})

	type scgiCase struct {
		name  string
		input string
		want  int // 0: a 400 or a closed connection
	}
	cases := []scgiCase{
		{"huge netstring length", "99999999999999999999999999:", 400},
		{"netstring past max_header_bytes", "1048576:" + strings.Repeat("a", 1<<20) + ",", 400},
		{"netstring length without colon", strings.Repeat("9", 100), 400},
		{"empty netstring", "0:,", 400},
		{"no comma", strings.TrimSuffix(header("CONTENT_LENGTH", "0", "SCGI", "1"), ",") + ";", 400},
		{"content length not first", header("SCGI", "1", "CONTENT_LENGTH", "0"), 400},
		{"no scgi 1", header("CONTENT_LENGTH", "0", "REQUEST_METHOD", "GET"), 400},
		{"bad content length", header("CONTENT_LENGTH", "abc", "SCGI", "1"), 400},
		{"negative content length", header("CONTENT_LENGTH", "-5", "SCGI", "1"), 400},
		{"content length past int64", header("CONTENT_LENGTH", "99999999999999999999999", "SCGI", "1"), 400},
		{"unterminated pair", "20:CONTENT_LENGTH\x000\x00SCGI,", 400},
		{"duplicate header", header("CONTENT_LENGTH", "0", "SCGI", "1", "REQUEST_METHOD", "GET", "REQUEST_METHOD", "POST"), 400},
		{"huge body", header("CONTENT_LENGTH", "1099511627776", "SCGI", "1", "REQUEST_METHOD", "POST", "REQUEST_URI", "/echo") + strings.Repeat("b", 1<<20), 413},
		{"truncated header", "100:CONTENT_LENGTH\x000\x00", 0},
		{"truncated body", header("CONTENT_LENGTH", "100", "SCGI", "1", "REQUEST_METHOD", "POST", "REQUEST_URI", "/echo") + "abc", 0},
	}
	// Front servers that stop half way, their connection held open, are
	// ended by the listener's timeout; the rest are half-closed after
	// their input.
	slow := []scgiCase{
		{"slow header", "100:CONTENT_LENGTH\x00", 0},
		{"slow body", header("CONTENT_LENGTH", "100", "SCGI", "1", "REQUEST_METHOD", "POST", "REQUEST_URI", "/echo") + "abc", 0},
	}
	all := append(cases, slow...)
	inParallel(len(all), func(i int) {
		tc := all[i]
		got := sendRaw(t, addr, []byte(tc.input), i < len(cases))
		if code := scgiStatus(got); tc.want != 0 && code != tc.want || tc.want == 0 && len(got) > 0 && code != 400 {
			t.Errorf("%s: answered %s, want Status %d", tc.name, clip(got), tc.want)
		}
	})

	crowd(t, addr, 200, func(i int) []byte {
		if i%3 == 0 {
			return []byte(header("CONTENT_LENGTH", "1000", "SCGI", "1", "REQUEST_METHOD", "POST", "REQUEST_URI", "/echo") + strings.Repeat("z", i))
		}
		return randomBytes(rng, 1+rng.IntN(2048))
	})

	checkAlive(t, tk, "gateway")
	code, body, err := scgiDo(t, addr, scgiRequest("GET", "/", ""))
	if err != nil || code != 200 || !strings.HasPrefix(body, "probe v1 ") {
		t.Fatalf("a normal request after the bad ones: %d %q %v", code, body, err)
	}
}

// dnsHeader is a DNS header with the given id, flags and section counts.
func dnsHeader(id, flags, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, flags, qd, an, ns, ar} {
		wire.BigEndian.PutUint16(b[2*i:], v)
	}
	return b
}

// badDNSPackets are malformed DNS messages every transport gets. The
// largest are 65507 bytes, the most a UDP datagram over IPv4 carries; the
// TCP test adds a message of 65535.
func badDNSPackets(rng *rand.Rand) map[string][]byte {
	loop := append(dnsHeader(1, 0, 1, 0, 0, 0), 0xc0, 12, 0, 16, 0, 1) // a name that points at itself
	return map[string][]byte{
		"one byte":                  {0x42},
		"header only":               dnsHeader(2, 0, 0, 0, 0, 0),
		"counts past the end":       dnsHeader(3, 0, 65535, 65535, 65535, 65535),
		"compression loop":          loop,
		"label past the end":        append(dnsHeader(4, 0, 1, 0, 0, 0), 63, 'a', 'b'),
		"name too long":             append(append(dnsHeader(5, 0, 1, 0, 0, 0), bytes.Repeat(append([]byte{63}, bytes.Repeat([]byte{'a'}, 63)...), 5)...), 0, 0, 16, 0, 1),
		"a response":                append(dnsHeader(6, 0x8000, 1, 0, 0, 0), 1, 'x', 0, 0, 16, 0, 1),
		"bad opcode":                append(dnsHeader(7, 0x7800, 1, 0, 0, 0), 1, 'x', 0, 0, 16, 0, 1),
		"two questions":             append(dnsHeader(8, 0, 2, 0, 0, 0), 1, 'x', 0, 0, 16, 0, 1, 1, 'y', 0, 0, 16, 0, 1),
		"huge random":               randomBytes(rng, 65507),
		"huge with a valid header":  append(append(dnsHeader(9, 0, 1, 0, 0, 0), 1, 'x', 0, 0, 16, 0, 1), randomBytes(rng, 65507-12-7)...),
		"truncated edns0 option":    append(append(dnsHeader(10, 0, 1, 0, 0, 1), 1, 'x', 0, 0, 16, 0, 1), 0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 20, 0, 8),
		"random after a header":     append(dnsHeader(11, 0, 1, 0, 0, 0), randomBytes(rng, 200)...),
		"question without a class":  append(dnsHeader(12, 0, 1, 0, 0, 0), 1, 'x', 0, 0, 16),
		"all ones":                  bytes.Repeat([]byte{0xff}, 512),
		"zero length label forever": append(dnsHeader(13, 0, 1, 0, 0, 0), make([]byte, 300)...),
	}
}

// dnsWorks fails t unless a normal query over net is answered by probe.
func dnsWorks(t *testing.T, addr, net string) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("after.example.", dns.TypeTXT)
	r, _, err := (&dns.Client{Net: net, Timeout: 10 * time.Second}).Exchange(q, addr)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !strings.HasPrefix(r.Answer[0].(*dns.TXT).Txt[0], "probe v1 ") {
		t.Fatalf("a normal %s query after the bad ones: %v %v", net, r, err)
	}
}

func TestBadInputDNSUDP(t *testing.T) {
	tk := startBad(t)
	rng := badRand(t)
	addr := tk.bound("dns")
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(badDeadline))
	send := func(p []byte) {
		if _, err := c.Write(p); err != nil {
			t.Errorf("sending %d bytes: %v", len(p), err)
		}
	}
	for _, p := range badDNSPackets(rng) {
		send(p)
	}
	for range 200 {
		send(randomBytes(rng, 1+rng.IntN(1500)))
	}
	// Many senders at once.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			c, err := net.Dial("udp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for j := range 50 {
				p := make([]byte, 1+j*20)
				copy(p, dnsHeader(uint16(j), 0, 1, 0, 0, 0))
				c.Write(p)
			}
		})
	}
	wg.Wait()

	// Every answer that came back is a valid message: the kernel answered
	// FORMERR or SERVFAIL, or probe did, never garbage.
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil || !m.Response {
			t.Errorf("an answer to garbage does not unpack as a response: %v %q", err, clip(buf[:n]))
		}
	}
	checkAlive(t, tk)
	dnsWorks(t, addr, "udp")
	dnsWorks(t, addr, "tcp")
}

func TestBadInputDNSTCP(t *testing.T) {
	tk := startBad(t)
	rng := badRand(t)
	addr := tk.bound("dns")
	framed := func(p []byte) []byte {
		return append(wire.BigEndian.AppendUint16(nil, uint16(len(p))), p...)
	}
	type tcpCase struct {
		name      string
		input     []byte
		halfClose bool // else the server's idle_timeout ends the connection
	}
	var cases []tcpCase
	for name, p := range badDNSPackets(rng) {
		cases = append(cases, tcpCase{name, framed(p), true}, tcpCase{name + ", held open", framed(p), false})
	}
	cases = append(cases,
		tcpCase{"65535 random bytes", framed(randomBytes(rng, 65535)), true},
		tcpCase{"length 65535, nothing after", []byte{0xff, 0xff}, true},
		tcpCase{"length 65535, truncated", append([]byte{0xff, 0xff}, randomBytes(rng, 1000)...), true},
		tcpCase{"length 65535, truncated, held open", append([]byte{0xff, 0xff}, randomBytes(rng, 1000)...), false},
		tcpCase{"length zero", []byte{0, 0}, true},
		tcpCase{"half a length", []byte{0x01}, true},
		tcpCase{"half a length, held open", []byte{0x01}, false},
		tcpCase{"one byte message", framed([]byte{0x42}), true},
		tcpCase{"many zero lengths", make([]byte, 4096), true},
		tcpCase{"random stream", randomBytes(rng, 64<<10), true},
	)
	inParallel(len(cases), func(i int) {
		checkTCPAnswers(t, cases[i].name, sendRaw(t, addr, cases[i].input, cases[i].halfClose))
	})
	// A query, then garbage on the same connection.
	q := new(dns.Msg)
	q.SetQuestion("first.example.", dns.TypeTXT)
	packed, _ := q.Pack()
	got := sendRaw(t, addr, append(framed(packed), randomBytes(rng, 3000)...), true)
	checkTCPAnswers(t, "a query then garbage", got)

	crowd(t, addr, 200, func(i int) []byte {
		if i%2 == 0 {
			return framed(randomBytes(rng, 1+rng.IntN(4096)))
		}
		return randomBytes(rng, 1+rng.IntN(4096))
	})
	checkAlive(t, tk, "dns")
	dnsWorks(t, addr, "tcp")
	dnsWorks(t, addr, "udp")
}

// checkTCPAnswers fails t unless b is a run of whole, length-prefixed DNS
// responses.
func checkTCPAnswers(t *testing.T, name string, b []byte) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 2 || len(b) < 2+int(wire.BigEndian.Uint16(b)) {
			t.Errorf("%s: a truncated answer %s", name, clip(b))
			return
		}
		n := int(wire.BigEndian.Uint16(b))
		var m dns.Msg
		if err := m.Unpack(b[2 : 2+n]); err != nil || !m.Response {
			t.Errorf("%s: an answer that is no response: %v %s", name, err, clip(b[2:2+n]))
		}
		b = b[2+n:]
	}
}

func TestBadInputLine(t *testing.T) {
	tk := startBad(t)
	rng := badRand(t)
	for _, listener := range []string{"lines", "telnet"} {
		t.Run(listener, func(t *testing.T) {
			addr := tk.bound(listener)
			telnetMess := bytes.Repeat([]byte{0xff, 0xfa, 0xff, 0xfb, 0xff, 0xff, 0xff, 0xf0, 0xff}, 2000)
			inputs := [][]byte{
				bytes.Repeat([]byte("x"), 1<<20),                                           // a huge line
				append(bytes.Repeat([]byte("x"), 1<<20), "\r\nafter\r\n"...),               // a huge line, then a line
				bytes.Repeat([]byte{0}, 10000),                                             // NUL bytes
				bytes.Repeat([]byte{0xc3, 0x28, 0xa0, 0xa1, 0xf0, 0x28, 0x8c, '\n'}, 1000), // invalid UTF-8
				bytes.Repeat([]byte("\r"), 10000),                                          // bare CRs
				telnetMess,                                                                 // unfinished telnet negotiation
				[]byte("no end of line"),                                                   // a truncated line
				[]byte("a\xff"),                                                            // a truncated telnet command
			}
			for range 10 {
				inputs = append(inputs, randomBytes(rng, 1+rng.IntN(16<<10)))
			}
			// The last one is held open, without a line end, until the
			// idle timeout ends it.
			inputs = append(inputs, []byte("held open, no end of line"))
			inParallel(len(inputs), func(i int) {
				// The session's replies and its end, whatever the input.
				got := sendRaw(t, addr, inputs[i], i < len(inputs)-1)
				if !bytes.HasPrefix(got, []byte("probe v1 pid ")) {
					t.Errorf("input %s: no greeting in %s", clip(inputs[i]), clip(got))
				}
			})
			crowd(t, addr, 100, func(int) []byte { return randomBytes(rng, 1+rng.IntN(4096)) })

			checkAlive(t, tk, listener)
			lc := dialLine(t, addr)
			if g := lc.mustRead(); !strings.HasPrefix(g, "probe v1 pid ") {
				t.Fatalf("greeting after the bad input: %q", g)
			}
			if n, v, _, text, ok := probeLine(lc.roundTrip("hello")); !ok || n != 1 || v != "v1" || text != "hello" {
				t.Fatal("a normal line after the bad input was not answered")
			}
			if got := lc.roundTrip(strings.Repeat("y", 1000)); !strings.HasSuffix(got, ": line too long (256 bytes kept)") {
				t.Fatalf("a long line answered %q", got)
			}
			lc.c.Close()
		})
	}
}
