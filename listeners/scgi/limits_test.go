package scgi

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestMaxConnections: with MaxConnections open (front servers that have
// connected and not yet sent their request), a new connection is closed at
// once, unanswered, and counted; once one closes, a new one is served.
func TestMaxConnections(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, Config{MaxConnections: 2}, handlerDispatcher{h: echo})
			a, b := ts.dial(t), ts.dial(t)
			testutil.WaitFor(t, 5*time.Second, "two connections open", func() bool { return ts.Stats().Connections == 2 })

			over := ts.dial(t)
			over.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(over)
			var ne net.Error
			if len(got) > 0 || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection over the limit read %q, %v: want it closed at once", got, err)
			}
			if st := ts.Stats(); st.Refused != 1 || st.Accepted != 2 {
				t.Errorf("Stats = %+v, want 1 refused, 2 accepted", st)
			}
			if !strings.Contains(ts.logs.String(), "too many connections") {
				t.Errorf("no warning logged:\n%s", ts.logs)
			}

			// An open one is still served, and its end makes room.
			b.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := b.Write(encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/b")); err != nil {
				t.Fatal(err)
			}
			if res, err := readResponse(b); err != nil || res.status != 200 {
				t.Fatalf("an open connection's request: %+v, %v", res, err)
			}
			testutil.WaitFor(t, 5*time.Second, "one connection open", func() bool { return ts.Stats().Connections == 1 })
			res, err := ts.roundTrip(t, encode("", "REQUEST_METHOD", "GET", "REQUEST_URI", "/after"))
			if err != nil || res.status != 200 {
				t.Fatalf("a request once a connection closed: %+v, %v", res, err)
			}
			if st := ts.Stats(); st.Refused != 1 || st.Accepted != 3 {
				t.Errorf("Stats = %+v, want 1 refused, 3 accepted", st)
			}
			a.Close()
		})
	}
}
