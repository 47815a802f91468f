package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// handlerDispatcher answers with a miekg/dns-style function in-process.
type handlerDispatcher func(q *mdns.Msg, transport string) (*mdns.Msg, error)

func (h handlerDispatcher) DispatchDNS(ctx context.Context, q Query) ([]byte, error) {
	m := new(mdns.Msg)
	if err := m.Unpack(q.Msg); err != nil {
		return nil, err
	}
	ans, err := h(m, q.Transport)
	if err != nil || ans == nil {
		return nil, err
	}
	return ans.Pack()
}

// txtAnswer answers every query with n TXT records of 100 bytes.
func txtAnswer(n int) handlerDispatcher {
	return func(q *mdns.Msg, _ string) (*mdns.Msg, error) {
		m := new(mdns.Msg)
		m.SetReply(q)
		if len(q.Question) == 0 {
			return m, nil
		}
		for range n {
			m.Answer = append(m.Answer, &mdns.TXT{Hdr: mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 60},
				Txt: []string{strings.Repeat("t", 100)}})
		}
		return m, nil
	}
}

type testServer struct {
	*Server
	addr string
}

// startServer serves d on a UDP and a TCP socket of the same loopback port.
func startServer(t *testing.T, cfg Config, d Dispatcher) *testServer {
	t.Helper()
	testutil.CheckGoroutines(t)
	var pc net.PacketConn
	var ln net.Listener
	for range 10 {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", ln.Addr().String()); err == nil {
			break
		}
		ln.Close()
	}
	if pc == nil {
		t.Fatal("no port free for both UDP and TCP")
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	s := New(cfg, d)
	served := make(chan error, 1)
	go func() { served <- s.Serve(pc, ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String()}
}

func (ts *testServer) exchange(t *testing.T, net string, q *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: net, Timeout: 10 * time.Second}
	var r *mdns.Msg
	var err error
	for range 50 { // the servers may still be starting
		if r, _, err = c.Exchange(q, ts.addr); err == nil {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s exchange: %v", net, err)
	return nil
}

func query(name string, qtype uint16) *mdns.Msg {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	return q
}

func TestAnswers(t *testing.T) {
	ts := startServer(t, Config{}, txtAnswer(2))
	for _, network := range []string{"udp", "tcp"} {
		r := ts.exchange(t, network, query("a.test.", mdns.TypeTXT))
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 2 || r.Truncated {
			t.Errorf("%s: %v", network, r)
		}
	}
}

// TestTruncation: a UDP answer over the client's size is truncated with TC
// set; over TCP, or with a large enough EDNS0 size, it arrives whole.
func TestTruncation(t *testing.T) {
	ts := startServer(t, Config{}, txtAnswer(30)) // ~3.4 KB
	r := ts.exchange(t, "udp", query("big.test.", mdns.TypeTXT))
	if !r.Truncated || len(r.Answer) == 30 {
		t.Errorf("UDP without EDNS0: TC=%v, %d records", r.Truncated, len(r.Answer))
	}
	q := query("big.test.", mdns.TypeTXT)
	q.SetEdns0(4096, false)
	if r := ts.exchange(t, "udp", q); r.Truncated || len(r.Answer) != 30 {
		t.Errorf("UDP with EDNS0 4096: TC=%v, %d records", r.Truncated, len(r.Answer))
	}
	q.SetEdns0(1232, false)
	if r := ts.exchange(t, "udp", q); !r.Truncated {
		t.Errorf("UDP with EDNS0 1232: not truncated, %d records", len(r.Answer))
	}
	if r := ts.exchange(t, "tcp", query("big.test.", mdns.TypeTXT)); r.Truncated || len(r.Answer) != 30 {
		t.Errorf("TCP: TC=%v, %d records", r.Truncated, len(r.Answer))
	}
}

// TestFailures: whatever goes wrong behind the dispatcher, the client gets
// SERVFAIL with its own id and question.
func TestFailures(t *testing.T) {
	tests := []struct {
		name string
		d    handlerDispatcher
	}{
		{"error", func(*mdns.Msg, string) (*mdns.Msg, error) { return nil, errors.New("plugin down") }},
		{"no answer", func(*mdns.Msg, string) (*mdns.Msg, error) { return nil, nil }},
		{"wrong id", func(q *mdns.Msg, _ string) (*mdns.Msg, error) {
			m := new(mdns.Msg)
			m.SetReply(q)
			m.Id++
			return m, nil
		}},
		{"wrong question", func(q *mdns.Msg, _ string) (*mdns.Msg, error) {
			m := new(mdns.Msg)
			m.SetReply(q)
			m.Question[0].Name = "other.test."
			return m, nil
		}},
		{"panic", func(*mdns.Msg, string) (*mdns.Msg, error) { panic("boom") }},
		{"not a response", func(q *mdns.Msg, _ string) (*mdns.Msg, error) {
			m := q.Copy()
			return m, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Config{}, tt.d)
			q := query("x.test.", mdns.TypeA)
			r := ts.exchange(t, "udp", q)
			if r.Rcode != mdns.RcodeServerFailure || r.Id != q.Id || r.Question[0].Name != "x.test." {
				t.Errorf("got %v", r)
			}
			if st := ts.Stats(); st.Errors == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestGarbage: a packet whose header parses but whose body does not gets
// FORMERR with its id; one too short for a header gets nothing.
func TestGarbage(t *testing.T) {
	ts := startServer(t, Config{}, txtAnswer(1))
	ts.exchange(t, "udp", query("warm.test.", mdns.TypeA))
	c, err := net.Dial("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(mdns.Msg)
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 0x1234 || r.Rcode != mdns.RcodeFormatError {
		t.Errorf("answer to a bad body: %v %v", r, err)
	}
	c.Write([]byte{1, 2, 3})
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Errorf("answered %d bytes to a 3-byte packet", n)
	}
}

// slowDispatcher answers every query with an empty reply, and holds
// slow.test.'s until release is closed, counting it in entered.
func slowDispatcher(release <-chan struct{}, entered *atomic.Int32) Dispatcher {
	return handlerDispatcher(func(q *mdns.Msg, _ string) (*mdns.Msg, error) {
		if q.Question[0].Name == "slow.test." {
			entered.Add(1)
			<-release
		}
		m := new(mdns.Msg)
		m.SetReply(q)
		return m, nil
	})
}

// TestOverload: queries beyond MaxInFlight get SERVFAIL at once.
func TestOverload(t *testing.T) {
	release := make(chan struct{})
	var entered atomic.Int32
	ts := startServer(t, Config{MaxInFlight: 1}, slowDispatcher(release, &entered))
	done := make(chan struct{})
	defer func() {
		close(release)
		<-done // the slow query's answer, before the server shuts down
	}()
	go func() {
		defer close(done)
		_, _, _ = (&mdns.Client{Timeout: 10 * time.Second}).Exchange(query("slow.test.", mdns.TypeA), ts.addr)
	}()
	testutil.WaitFor(t, 5*time.Second, "the slow query", func() bool { return entered.Load() == 1 })
	if r := ts.exchange(t, "udp", query("fast.test.", mdns.TypeA)); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("over the limit: %v", r)
	}
}

// TestTCPPipelining sends several queries on one TCP connection.
func TestTCPPipelining(t *testing.T) {
	ts := startServer(t, Config{}, txtAnswer(1))
	ts.exchange(t, "tcp", query("warm.test.", mdns.TypeA))
	conn, err := mdns.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ids := map[uint16]bool{}
	for i := range 5 {
		q := query("p"+string(rune('a'+i))+".test.", mdns.TypeTXT)
		ids[q.Id] = true
		if err := conn.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 5 {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if !ids[r.Id] {
			t.Errorf("answer with id %d", r.Id)
		}
		delete(ids, r.Id)
	}
}

func TestShutdownRightAfterServe(t *testing.T) {
	for range 30 {
		pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		s := New(Config{Logger: slog.New(slog.DiscardHandler)}, txtAnswer(1))
		served := make(chan error, 1)
		go func() { served <- s.Serve(pc, ln) }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after Shutdown")
		}
	}
}

// FuzzPackets sends random packets to a running listener: it never
// crashes, and every answer carries the id of the packet it answers.
func FuzzPackets(f *testing.F) {
	for _, q := range []*mdns.Msg{query("a.test.", mdns.TypeA), query("big.test.", mdns.TypeTXT)} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff})
	f.Add([]byte{1, 2, 3})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	s := New(Config{Logger: slog.New(slog.DiscardHandler)}, txtAnswer(3))
	go s.Serve(pc, nil)
	defer s.Shutdown(context.Background())
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) == 0 || len(pkt) > 4096 {
			return
		}
		buf := make([]byte, 65535)
		// Drop answers that came late for earlier packets.
		for {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		if _, err := c.Write(pkt); err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return // dropped: fine
		}
		if n < 2 || len(pkt) < 2 || buf[0] != pkt[0] || buf[1] != pkt[1] {
			t.Fatalf("answer id %x to a packet with id %x", buf[:min(n, 2)], pkt[:2])
		}
	})
}

// TestShutdownAnswersInFlight: a UDP query being answered when Shutdown
// begins still gets its answer before the socket closes, as an upgrade's
// drain needs; Shutdown waits for it.
func TestShutdownAnswersInFlight(t *testing.T) {
	release := make(chan struct{})
	var entered atomic.Int32
	ts := startServer(t, Config{}, slowDispatcher(release, &entered))
	ts.exchange(t, "udp", query("warm.test.", mdns.TypeA))
	type result struct {
		r   *mdns.Msg
		err error
	}
	answered := make(chan result, 1)
	go func() {
		r, _, err := (&mdns.Client{Timeout: 10 * time.Second}).Exchange(query("slow.test.", mdns.TypeA), ts.addr)
		answered <- result{r, err}
	}()
	testutil.WaitFor(t, 5*time.Second, "the slow query", func() bool { return entered.Load() == 1 })
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	// Let Shutdown reach its wait for the query; the answer is checked
	// whichever comes first.
	time.Sleep(100 * time.Millisecond)
	close(release)
	res := <-answered
	if res.err != nil || res.r.Rcode != mdns.RcodeSuccess {
		t.Errorf("the query in flight at Shutdown: %v, %v", res.r, res.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
