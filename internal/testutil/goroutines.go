package testutil

import (
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// settleTime is how long the goroutine checks give stragglers to exit.
const settleTime = 5 * time.Second

// CheckGoroutines fails t if goroutines started during the test are still
// running once its cleanups have run. Call it first, so that its cleanup
// runs last. It counts every goroutine in the process, so tests that use it
// must not run in parallel with others.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		t.Helper()
		GoroutinesSettle(t, before)
	})
}

// GoroutinesSettle waits up to 5 seconds for the number of goroutines to
// fall back to before, and fails t with the stacks of all goroutines if it
// does not. It
// is for a check that cannot be a cleanup of its own, such as one made in
// the middle of a cleanup; the same caveat about parallel tests holds.
func GoroutinesSettle(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(settleTime)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
			t.Errorf("%d goroutines too many after %v (%d before, %d now):\n%s", n-before, settleTime, before, n, b.String())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
