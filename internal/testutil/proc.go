package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Alive reports whether pid is a live process: neither gone nor a zombie
// waiting to be reaped. It reads /proc, so it works on Linux only.
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
