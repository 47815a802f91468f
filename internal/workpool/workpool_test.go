package workpool

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestPool: every task runs, sequential and many at once (more than MaxIdle
// workers), and Stop, twice, ends every worker.
func TestPool(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := New()
	var ran atomic.Int64
	var wg sync.WaitGroup
	// Sequential tasks: after the first, an idle worker takes each.
	for range 100 {
		wg.Add(1)
		done := make(chan struct{})
		p.Run(func() {
			defer wg.Done()
			ran.Add(1)
			close(done)
		})
		<-done
	}
	// Many at once: more workers than MaxIdle, of which MaxIdle stay
	// (CheckGoroutines sees any that Stop leaves).
	release := make(chan struct{})
	for range 2 * MaxIdle {
		wg.Add(1)
		p.Run(func() {
			defer wg.Done()
			<-release
			ran.Add(1)
		})
	}
	close(release)
	wg.Wait()
	if got := ran.Load(); got != 100+2*MaxIdle {
		t.Errorf("%d tasks ran, want %d", got, 100+2*MaxIdle)
	}
	p.Stop()
	p.Stop()
}
