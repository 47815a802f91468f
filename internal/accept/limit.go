package accept

import (
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// DefaultMaxConnections bounds the connections a front end keeps open at
// once when its configuration sets no positive limit.
const DefaultMaxConnections = 10000

// warnEvery is the least time between two warnings of one Refusals.
const warnEvery = time.Second

// Refusals counts the connections a front end closes at once because it
// already has its maximum open, and warns about them at most once a second,
// so that a flood costs a counter, not a log line per connection. The zero
// value is ready to use; it is safe for concurrent use.
type Refusals struct {
	n      atomic.Int64
	last   atomic.Int64 // unix ns of the last warning; 0 before any
	logged atomic.Int64 // n at the last warning

	now func() time.Time // nil = time.Now; tests set it
}

// Refuse counts c, logs a warning on log unless one was logged less than a
// second ago, and closes c. max is the limit, for the log.
func (r *Refusals) Refuse(c net.Conn, log *slog.Logger, max int) {
	defer c.Close()
	n := r.n.Add(1)
	clock := r.now
	if clock == nil {
		clock = time.Now
	}
	now := clock().UnixNano()
	last := r.last.Load()
	if last != 0 && now-last < int64(warnEvery) || !r.last.CompareAndSwap(last, now) {
		return
	}
	log.Warn("too many connections open; closing new ones at once",
		"max_connections", max, "refused", n, "refused_since_last_warning", n-r.logged.Swap(n), "remote", addrString(c.RemoteAddr()))
}

// Count returns how many connections have been refused.
func (r *Refusals) Count() int64 { return r.n.Load() }

// Max returns max, or DefaultMaxConnections when max is not positive.
func Max(max int) int {
	if max <= 0 {
		return DefaultMaxConnections
	}
	return max
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
