package loglimit

import (
	"log/slog"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestLimiter: a burst passes, the rest of a flood is dropped and counted,
// and the count is reported once records flow again, with the attributes
// of the logger it went through.
func TestLimiter(t *testing.T) {
	const rate, burst = 1000, 5000
	rec := &testutil.LogRecorder{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lim := New(rate, burst)
	lim.now = func() time.Time { return now }
	log := Logger(slog.New(rec), lim, "records dropped").With("plugin", "p")
	for i := range burst + 500 {
		log.Info("flood", "i", i)
	}
	if n := len(rec.Find("flood")); n != burst {
		t.Fatalf("%d of %d flood records passed, want the burst (%d)", n, burst+500, burst)
	}
	now = now.Add(20 * time.Millisecond) // refills 20 tokens
	log.Info("after")
	drops := rec.Find("records dropped")
	if len(drops) != 1 || drops[0].Attrs["dropped"] != "500" || drops[0].Attrs["plugin"] != "p" {
		t.Fatalf("drop report %+v", drops)
	}
	if len(rec.Find("after")) != 1 {
		t.Fatal("the record after the flood was dropped")
	}
}
