package kernel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/internal/pprofmux"
)

// servePprof serves net/http/pprof's handlers under /debug/pprof/ on addr
// (serve -pprof) until ctx ends, and returns once it has stopped. An
// address still taken, as it is while an upgrade's old kernel lives, is
// retried every second rather than keeping the kernel from starting.
func servePprof(ctx context.Context, addr string, log *slog.Logger) {
	srv := &http.Server{Handler: pprofmux.New(), ReadHeaderTimeout: 10 * time.Second}
	var lc net.ListenConfig
	warned := false
	for {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err == nil {
			log.Info("pprof serving", "address", ln.Addr().String())
			done := make(chan struct{})
			go func() {
				defer close(done)
				<-ctx.Done()
				srv.Close()
			}()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Warn("pprof server", "error", err)
			}
			<-done
			return
		}
		if !warned {
			log.Warn("pprof: cannot listen yet; retrying every second", "address", addr, "error", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
