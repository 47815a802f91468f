package testbin

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Main is a TestMain: it creates a Builder, hands it to use, runs the tests,
// removes what was built and exits.
func Main(m *testing.M, use func(*Builder)) {
	b, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	use(b)
	code := m.Run()
	b.Close()
	os.Exit(code)
}

// Alive reports whether pid is a live process: neither gone nor a zombie
// waiting to be reaped.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// ProcessesUnder lists the live processes whose executable lies under dir.
func ProcessesUnder(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err == nil && strings.HasPrefix(exe, dir) && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitFor polls cond until it holds, failing the test if d passes first.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
