package testutil

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FDSet is a snapshot of the process's open file descriptors: each number
// and what it refers to, as /proc/self/fd/N links it ("/path",
// "socket:[INODE]", "pipe:[INODE]", "anon_inode:[eventpoll]").
type FDSet map[int]string

// OpenFDs returns the process's open file descriptors, less the one it
// reads them with. It reads /proc, so it works on Linux only; elsewhere it
// returns an error.
func OpenFDs() (FDSet, error) {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("listing file descriptors: %w", err)
	}
	defer dir.Close()
	self := int(dir.Fd())
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing file descriptors: %w", err)
	}
	fds := make(FDSet, len(names))
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == self {
			continue
		}
		// A descriptor closed since the listing has no link: it is gone.
		if target, err := os.Readlink("/proc/self/fd/" + name); err == nil {
			fds[fd] = target
		}
	}
	return fds, nil
}

// String lists the descriptors, by number, one per line.
func (s FDSet) String() string {
	var b strings.Builder
	for _, fd := range slices.Sorted(maps.Keys(s)) {
		fmt.Fprintf(&b, "  %d -> %s\n", fd, s[fd])
	}
	return b.String()
}

// CheckFDs fails t if file descriptors opened during the test are still
// open once its cleanups have run. Call it first, so that its cleanup runs
// last. It counts every descriptor of the process, so tests that use it
// must not run in parallel with others. Where /proc cannot be read it
// checks nothing.
func CheckFDs(t testing.TB) {
	t.Helper()
	before, err := OpenFDs()
	if err != nil {
		return
	}
	t.Cleanup(func() {
		t.Helper()
		FDsSettle(t, before)
	})
}

// FDsSettle waits up to 5 seconds for the number of open file descriptors
// to fall back to len(before), and fails t listing the descriptors opened
// since before if it does not. It is for a check that cannot be a cleanup
// of its own, such as one made in the middle of a cleanup; the caveat of
// CheckFDs about parallel tests holds. A nil before checks nothing.
func FDsSettle(t testing.TB, before FDSet) {
	t.Helper()
	fdsSettle(t, before, settleTime)
}

func fdsSettle(t testing.TB, before FDSet, settle time.Duration) {
	t.Helper()
	if before == nil {
		return
	}
	deadline := time.Now().Add(settle)
	for {
		now, err := OpenFDs()
		if err != nil {
			t.Errorf("checking for leaked file descriptors: %v", err)
			return
		}
		if len(now) <= len(before) {
			return
		}
		if time.Now().After(deadline) {
			opened := make(FDSet)
			for fd, target := range now {
				if before[fd] != target {
					opened[fd] = target
				}
			}
			t.Errorf("%d file descriptors too many after %v (%d before, %d now); opened since:\n%s",
				len(now)-len(before), settle, len(before), len(now), opened)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
