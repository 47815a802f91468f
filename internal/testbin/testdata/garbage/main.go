// Command garbage is a broken plugin for tests (built by them from internal/testbin/testdata): it writes its
// pid to $PIDFILE, prints a line that is not go-plugin's handshake and keeps
// running.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	if f := os.Getenv("PIDFILE"); f != "" {
		_ = os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	fmt.Println("hello, I am not a plugin")
	time.Sleep(time.Hour)
}
