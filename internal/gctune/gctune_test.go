package gctune

import (
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name              string
		live, rate, floor uint64
		want              int
	}{
		{"no cycle yet", 0, 0, 64 * mib, 100},
		{"at rest", 4 * mib, 1 * mib, 64 * mib, 100},
		{"a quarter second's growth", 4 * mib, 80 * mib, 64 * mib, 500},      // 20 MiB per cycle on 4 MiB
		{"the floor binds", 4 * mib, 1000 * mib, 64 * mib, 1500},             // 4 × 16 = 64 MiB
		{"the runtime's minimum binds", 1 * mib, 1000 * mib, 64 * mib, 1600}, // 4 MiB × 16 = 64 MiB
		{"half the floor live", 32 * mib, 1000 * mib, 64 * mib, 100},
		{"past the floor", 100 * mib, 1000 * mib, 64 * mib, 100},
		{"capped", 1, 1 << 40, 1 << 40, maxPercent},
	} {
		if got := Percent(c.live, c.rate, c.floor); got != c.want {
			t.Errorf("%s: Percent(%d, %d, %d) = %d, want %d", c.name, c.live, c.rate, c.floor, got, c.want)
		}
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestStart: under a high allocation rate the percentage rises to what the
// floor allows, at rest it falls back to 100, and stop restores 100. With
// GOGC in the environment nothing changes.
func TestStart(t *testing.T) {
	t.Setenv("GOGC", "400")
	stop := Start(64 << 20)
	churn(t, 100, 200*time.Millisecond)
	stop()
	unsetGOGC(t)
	stop = Start(64 << 20)
	defer func() {
		stop()
		if got := gogc(); got != 100 {
			t.Errorf("after stop: %d, want 100", got)
		}
	}()
	// The test's live heap is a few hundred KiB, so the runtime's
	// minimum target binds, at 1600 (4 MiB × 16 = 64 MiB); 1000 leaves
	// room for a live heap of up to 5.8 MiB.
	churn(t, 1000, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for gogc() != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("at rest: %d, want 100", gogc())
		}
		time.Sleep(50 * time.Millisecond)
		runtime.GC()
	}
}

var sink []byte

// churn allocates garbage fast until the percentage is at least want, for
// at most d; with want 100 it checks that the percentage stays 100 all along.
func churn(t *testing.T, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for range 64 {
			sink = make([]byte, 64<<10)
		}
		got := gogc()
		if want == 100 && got != 100 {
			t.Fatalf("percentage %d, want it left at 100", got)
		}
		if want != 100 && got >= want {
			return
		}
	}
	if want != 100 {
		t.Fatalf("percentage %d after %v of churn, want %d", gogc(), d, want)
	}
}

// unsetGOGC removes GOGC from the environment for the rest of the test.
func unsetGOGC(t *testing.T) {
	t.Setenv("GOGC", "")
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
}
