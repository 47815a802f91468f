package testutil

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// errorRecorder is a testing.TB that records its errors instead of
// failing.
type errorRecorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *errorRecorder) Helper() {}

func (r *errorRecorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestOpenFDs(t *testing.T) {
	before, err := OpenFDs()
	if err != nil {
		t.Skip(err)
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	now, err := OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	if got := now[int(f.Fd())]; got == "" || len(now) != len(before)+1 {
		t.Errorf("after opening %s: fd %d -> %q, %d fds (%d before)", f.Name(), f.Fd(), got, len(now), len(before))
	}

	// A descriptor closed while the check settles is no leak.
	rec := &errorRecorder{TB: t}
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.Close()
	}()
	fdsSettle(rec, before, 10*time.Second)
	if len(rec.errs) != 0 {
		t.Errorf("a descriptor closed while settling reported: %v", rec.errs)
	}

	// One left open is, and the report names it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fdsSettle(rec, before, 20*time.Millisecond)
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "2 file descriptors too many") || !strings.Contains(rec.errs[0], "pipe:[") {
		t.Errorf("two pipe ends left open: %q", rec.errs)
	}
}

func TestCheckFDs(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		CheckFDs(t)
		f, err := os.Open(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() }) // runs before the check
	})
}
