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

	"github.com/miekg/dns"
)

// Running a plugin without the kernel: when the environment variable
// StandaloneEnv holds an address and the kernel did not start the program,
// Serve serves the plugin's HTTP handler there itself, with net/http and
// nothing in between; StandaloneDNSEnv likewise serves its DNS handler with
// miekg/dns on UDP and TCP. Settings come as a JSON object in SettingsEnv.
// It is for trying a plugin with curl or dig while writing it, and it is
// the in-process baseline scripts/bench measures the kernel against.
//
//	SWITCHYARD_STANDALONE=127.0.0.1:9000 SWITCHYARD_SETTINGS='{"greeting":"hi"}' bin/plugins/hello
//	SWITCHYARD_STANDALONE_DNS=127.0.0.1:9053 SWITCHYARD_SETTINGS='{"file":"bin/example.zone"}' bin/plugins/zone
const (
	StandaloneEnv    = "SWITCHYARD_STANDALONE"
	StandaloneDNSEnv = "SWITCHYARD_STANDALONE_DNS"
	SettingsEnv      = "SWITCHYARD_SETTINGS"
)

// serveStandalone serves p on httpAddr and dnsAddr ("" for none) until
// SIGINT or SIGTERM and returns the exit status.
func serveStandalone(p Plugin, httpAddr, dnsAddr string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if httpAddr != "" && p.HTTP == nil {
		log.Error("standalone: the plugin has no HTTP handler")
		return 1
	}
	if dnsAddr != "" && p.DNS == nil {
		log.Error("standalone: the plugin has no DNS handler")
		return 1
	}
	host := newHost(p.Name, 1, nil, slog.LevelInfo)
	if p.Configure != nil {
		settings := os.Getenv(SettingsEnv)
		if settings == "" {
			settings = "{}"
		}
		cfg := Config{Slot: p.Name, Generation: 1, Settings: []byte(settings), Host: host}
		if httpAddr != "" {
			cfg.Listeners = append(cfg.Listeners, Listener{Name: "standalone", Protocol: "http", Address: httpAddr})
		}
		if dnsAddr != "" {
			cfg.Listeners = append(cfg.Listeners, Listener{Name: "standalone-dns", Protocol: "dns", Address: dnsAddr})
		}
		if err := callConfigure(context.Background(), p.Configure, cfg); err != nil {
			log.Error("standalone: configure", "error", err)
			return 1
		}
	}
	var servers []func(context.Context) error
	errc := make(chan error, 3)
	if httpAddr != "" {
		srv := &http.Server{Addr: httpAddr, Handler: p.HTTP, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		servers = append(servers, srv.Shutdown)
		log.Info(fmt.Sprintf("standalone: %s %s serving HTTP on %s", p.Name, p.Version, httpAddr))
	}
	if dnsAddr != "" {
		for _, network := range []string{"udp", "tcp"} {
			srv := &dns.Server{Addr: dnsAddr, Net: network, Handler: p.DNS, UDPSize: 4096}
			go func() {
				if err := srv.ListenAndServe(); err != nil {
					errc <- fmt.Errorf("dns %s: %w", network, err)
				}
			}()
			servers = append(servers, srv.ShutdownContext)
		}
		log.Info(fmt.Sprintf("standalone: %s %s serving DNS on %s (UDP and TCP)", p.Name, p.Version, dnsAddr))
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	status := 0
	select {
	case <-sigs:
	case err := <-errc:
		log.Error("standalone", "error", err)
		status = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, shutdown := range servers {
		_ = shutdown(ctx)
	}
	return status
}
