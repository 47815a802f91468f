package accept

import (
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// closeRecorder is a connection that records its Close.
type closeRecorder struct {
	net.Conn
	mu     sync.Mutex
	closed bool
}

func (c *closeRecorder) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *closeRecorder) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
}

// TestRefusals: every refused connection is closed and counted, and the
// warnings come at most one a second, on a clock the test moves.
func TestRefusals(t *testing.T) {
	var rec testutil.LogRecorder
	log := slog.New(&rec)
	now := time.Unix(1000, 0)
	r := Refusals{now: func() time.Time { return now }}
	refuse := func(n int) {
		for range n {
			c := &closeRecorder{}
			r.Refuse(c, log, 2)
			if !c.closed {
				t.Fatal("a refused connection was left open")
			}
		}
	}
	warnings := func() []testutil.Record { return rec.Find("too many connections") }

	refuse(50)
	if got := len(warnings()); got != 1 {
		t.Fatalf("%d warnings for 50 refusals within a second, want 1", got)
	}
	now = now.Add(999 * time.Millisecond)
	refuse(10)
	if got := len(warnings()); got != 1 {
		t.Fatalf("%d warnings before a second passed, want 1", got)
	}
	now = now.Add(time.Millisecond)
	refuse(5)
	w := warnings()
	if len(w) != 2 {
		t.Fatalf("%d warnings once a second passed, want 2", len(w))
	}
	if w[0].Attrs["refused"] != "1" || w[1].Attrs["refused"] != "61" || w[1].Attrs["refused_since_last_warning"] != "60" ||
		w[1].Attrs["max_connections"] != "2" || w[1].Attrs["remote"] != "127.0.0.1:9" {
		t.Errorf("warnings %+v", w)
	}
	if got := r.Count(); got != 65 {
		t.Errorf("Count = %d, want 65", got)
	}
}

func TestMax(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, DefaultMaxConnections}, {-1, DefaultMaxConnections}, {1, 1}, {500, 500}} {
		if got := Max(tc.in); got != tc.want {
			t.Errorf("Max(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
