// Command hang is a broken plugin for tests (built by them from internal/testbin/testdata): it writes its
// pid to $PIDFILE and then hangs without printing go-plugin's handshake.
package main

import (
	"os"
	"strconv"
	"time"
)

func main() {
	if f := os.Getenv("PIDFILE"); f != "" {
		_ = os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	time.Sleep(time.Hour)
}
