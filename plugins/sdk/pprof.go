package sdk

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/switchyard-dev/switchyard/internal/pprofmux"
)

// PprofEnv names the environment variable that makes a plugin serve
// net/http/pprof under /debug/pprof/ on the TCP address it holds, for
// profiling the plugin while the kernel drives it. Set it in the plugin's
// `env` in the kernel's configuration. A plugin that cannot listen there
// says so on stderr (the kernel logs it) and serves on regardless.
const PprofEnv = "SWITCHYARD_PPROF"

// startPprof serves pprof on addr for the life of the process.
func startPprof(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchyard plugin: %s: %v\n", PprofEnv, err)
		return
	}
	srv := &http.Server{Handler: pprofmux.New(), ReadHeaderTimeout: 10 * time.Second}
	// The process's lifetime bounds it: the plugin exits, it ends.
	go srv.Serve(ln)
}
