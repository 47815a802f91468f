package dns

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// tcpConn opens a DNS-over-TCP connection to ts, closed when t ends.
func (ts *testServer) tcpConn(t *testing.T) *mdns.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &mdns.Conn{Conn: c}
}

// ask sends q on c and reads the answer.
func ask(c *mdns.Conn, q *mdns.Msg) (*mdns.Msg, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMsg(q); err != nil {
		return nil, err
	}
	return c.ReadMsg()
}

// closedByServer fails t unless the server closes c, with nothing to read,
// before the test's deadline.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read %d bytes, %v: want the connection closed by the server", n, err)
	}
	if !errors.Is(err, io.EOF) {
		t.Logf("closed with %v", err)
	}
}

// TestMaxConnections: with MaxConnections TCP connections open, a new one
// is closed at once and counted; once one closes, a new one is served. UDP
// is not affected.
func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Config{MaxConnections: 2}, txtAnswer(1))
	var open []*mdns.Conn
	for range 2 {
		c := ts.tcpConn(t)
		if r, err := ask(c, query("in.test.", mdns.TypeTXT)); err != nil || len(r.Answer) != 1 {
			t.Fatalf("a query within the limit: %v, %v", r, err)
		}
		open = append(open, c)
	}
	closedByServer(t, ts.tcpConn(t))
	if st := ts.Stats(); st.Refused != 1 || st.Accepted != 2 {
		t.Errorf("Stats = %+v, want 1 refused, 2 accepted", st)
	}
	if r := ts.exchange(t, "udp", query("udp.test.", mdns.TypeTXT)); len(r.Answer) != 1 {
		t.Errorf("UDP at the TCP limit: %v", r)
	}

	open[0].Close()
	testutil.WaitFor(t, 5*time.Second, "one connection open", func() bool { return ts.Stats().Connections == 1 })
	c := ts.tcpConn(t)
	if r, err := ask(c, query("after.test.", mdns.TypeTXT)); err != nil || len(r.Answer) != 1 {
		t.Fatalf("a query once a connection closed: %v, %v", r, err)
	}
	if r, err := ask(open[1], query("still.test.", mdns.TypeTXT)); err != nil || len(r.Answer) != 1 {
		t.Fatalf("a query on an open connection: %v, %v", r, err)
	}
	if st := ts.Stats(); st.Refused != 1 || st.Accepted != 3 {
		t.Errorf("Stats = %+v, want 1 refused, 3 accepted", st)
	}
}

// TestTCPIdleTimeout: a TCP connection that sends no query, or no further
// query, for TCPIdleTimeout is closed.
func TestTCPIdleTimeout(t *testing.T) {
	ts := startServer(t, Config{TCPIdleTimeout: 100 * time.Millisecond}, txtAnswer(1))
	silent := ts.tcpConn(t)
	closedByServer(t, silent.Conn)

	after := ts.tcpConn(t)
	if r, err := ask(after, query("one.test.", mdns.TypeTXT)); err != nil || len(r.Answer) != 1 {
		t.Fatalf("query: %v, %v", r, err)
	}
	closedByServer(t, after.Conn)
	testutil.WaitFor(t, 5*time.Second, "no connection open", func() bool { return ts.Stats().Connections == 0 })
}
