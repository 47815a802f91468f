package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Running a plugin without the kernel: when the environment variable
// StandaloneEnv holds an address and the kernel did not start the program,
// Serve serves the plugin's HTTP handler there itself, with net/http and
// nothing in between. Settings come as a JSON object in SettingsEnv. It is
// for trying a plugin with curl while writing it, and it is the in-process
// baseline scripts/bench measures the kernel against.
//
//	SWITCHYARD_STANDALONE=127.0.0.1:9000 SWITCHYARD_SETTINGS='{"greeting":"hi"}' bin/plugins/hello
const (
	StandaloneEnv = "SWITCHYARD_STANDALONE"
	SettingsEnv   = "SWITCHYARD_SETTINGS"
)

// serveStandalone serves p on addr until SIGINT or SIGTERM and returns the
// exit status.
func serveStandalone(p Plugin, addr string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if p.HTTP == nil {
		log.Error("standalone: the plugin has no HTTP handler")
		return 1
	}
	host := newHost(p.Name, 1, nil, slog.LevelInfo)
	if p.Configure != nil {
		settings := os.Getenv(SettingsEnv)
		if settings == "" {
			settings = "{}"
		}
		cfg := Config{Slot: p.Name, Generation: 1, Settings: []byte(settings), Host: host,
			Listeners: []Listener{{Name: "standalone", Protocol: "http", Address: addr}}}
		if err := callConfigure(context.Background(), p.Configure, cfg); err != nil {
			log.Error("standalone: configure", "error", err)
			return 1
		}
	}
	srv := &http.Server{Addr: addr, Handler: p.HTTP, ReadHeaderTimeout: 10 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Info(fmt.Sprintf("standalone: %s %s serving HTTP on %s", p.Name, p.Version, addr))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("standalone", "error", err)
		return 1
	}
	return 0
}
