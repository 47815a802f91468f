package line

import (
	"testing"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestMaxConnections: with MaxConnections open, a new connection is closed
// at once, before any event, and counted; once one closes, a new one is
// served; SetLimits moves the limit for the connections that come next and
// closes no live one. Connections are still read through their RawConn.
func TestMaxConnections(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{Limits: Limits{MaxConnections: 2}}, d)
	a, b := ts.dial(t), ts.dial(t)
	if ts.Lookup(a.id).rc == nil {
		t.Fatal("a TCP connection has no RawConn")
	}
	refused := func(want int64) {
		t.Helper()
		ts.connect(t).expectEOF()
		if got := ts.Stats().Refused; got != want {
			t.Fatalf("Refused = %d, want %d", got, want)
		}
	}
	refused(1)
	if n := len(ts.logs.Find("too many connections")); n == 0 {
		t.Error("no warning logged")
	}
	b.send("still here\r\n")
	b.expect("echo: still here")

	a.send("quit\r\n")
	a.expect("bye", "closing: closed by handler")
	a.expectEOF()
	testutil.WaitFor(t, testTimeout, "one connection open", func() bool { return ts.Stats().Connections == 1 })
	c := ts.dial(t)
	c.send("after\r\n")
	c.expect("echo: after")

	ts.SetLimits(Limits{MaxConnections: 3})
	e := ts.dial(t)
	ts.SetLimits(Limits{MaxConnections: 1})
	refused(2)
	for _, cl := range []*client{b, c, e} {
		cl.send("lowered\r\n")
		cl.expect("echo: lowered")
	}
	if st := ts.Stats(); st.Accepted != 4 || st.Connections != 3 {
		t.Errorf("Stats = %+v, want 4 accepted, 3 open", st)
	}
	d.mu.Lock()
	sessions := len(d.events)
	d.mu.Unlock()
	if sessions != 4 {
		t.Errorf("%d sessions saw events, want 4: a refused connection got an event", sessions)
	}
}
