// Command exit1 is a broken plugin for tests (built by them from internal/testbin/testdata): it writes its
// pid to $PIDFILE, says why on stderr and exits with status 1 before any
// handshake.
package main

import (
	"fmt"
	"os"
	"strconv"
)

func main() {
	if f := os.Getenv("PIDFILE"); f != "" {
		_ = os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	fmt.Fprintln(os.Stderr, "exit1: refusing to start")
	os.Exit(1)
}
