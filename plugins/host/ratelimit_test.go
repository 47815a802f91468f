package host

import (
	"log/slog"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestLogLimiter: a burst passes, the rest of a flood is dropped and
// counted, and the count is reported once records flow again.
func TestLogLimiter(t *testing.T) {
	rec := &testutil.LogRecorder{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lim := &logLimiter{now: func() time.Time { return now }}
	log := slog.New(limitedHandler{Handler: rec, lim: lim}).With("plugin", "p")
	for i := range logBurst + 500 {
		log.Info("flood", "i", i)
	}
	if n := len(rec.Find("flood")); n != logBurst {
		t.Fatalf("%d of %d flood records passed, want the burst (%d)", n, logBurst+500, logBurst)
	}
	now = now.Add(20 * time.Millisecond) // refills 20 tokens
	log.Info("after")
	drops := rec.Find("plugin log over its rate limit: records dropped")
	if len(drops) != 1 || drops[0].Attrs["dropped"] != "500" || drops[0].Attrs["plugin"] != "p" {
		t.Fatalf("drop report %+v", drops)
	}
	if len(rec.Find("after")) != 1 {
		t.Fatal("the record after the flood was dropped")
	}
}
