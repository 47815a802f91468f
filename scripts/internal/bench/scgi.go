package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/switchyard-dev/switchyard/internal/nginx"
	"github.com/switchyard-dev/switchyard/listeners/scgi"
)

// benchSCGI measures a real nginx passing requests over SCGI to the kernel's
// hello-scgi listener (the hello plugin behind it), then to a minimal Go
// SCGI responder serving the same answer in this process.
func benchSCGI(ctx context.Context, tmp string, d time.Duration, conns, threads int) (wrkPair, error) {
	if _, err := nginx.Path(); err != nil {
		return wrkPair{}, err
	}
	// The baseline responder: listeners/scgi with the handler in-process.
	basePath := filepath.Join(tmp, "b.sock")
	ln, err := net.Listen("unix", basePath)
	if err != nil {
		return wrkPair{}, err
	}
	pid := os.Getpid()
	srv := scgi.New(scgi.Config{Name: "baseline", Logger: slog.New(slog.DiscardHandler)}, handlerDispatcher{
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "hello from in-process (pid %d)\n", pid)
		}),
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()

	kAddr, err := nginx.FreePort()
	if err != nil {
		return wrkPair{}, err
	}
	bAddr, err := nginx.FreePort()
	if err != nil {
		return wrkPair{}, err
	}
	dir := filepath.Join(tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return wrkPair{}, err
	}
	ng, err := nginx.Start(ctx, nginx.Config{Dir: dir, Workers: 1, Routes: []nginx.Route{
		{Listen: kAddr, SCGI: "unix:" + filepath.Join(tmp, "k.sock")},
		{Listen: bAddr, SCGI: "unix:" + basePath},
	}})
	if err != nil {
		return wrkPair{}, err
	}
	defer ng.Stop()
	kurl, burl := "http://"+kAddr+"/", "http://"+bAddr+"/"
	for _, u := range []string{kurl, burl} {
		if err := waitAnswer(u, "hello from", 30*time.Second); err != nil {
			return wrkPair{}, errors.Join(err, errors.New(ng.ErrorLog()))
		}
		if _, err := wrk(u, "warm-up", 2*time.Second, conns, threads); err != nil {
			return wrkPair{}, err
		}
	}
	return wrkAlternate([2]string{kurl, burl}, [2]string{"nginx → SCGI → kernel → hello plugin", "nginx → SCGI → in-process Go responder"}, d, conns, threads, [2][]int{})
}

// handlerDispatcher serves an http.Handler in-process, as the kernel's
// dispatcher serves a plugin.
type handlerDispatcher struct{ h http.Handler }

func (d handlerDispatcher) Dispatch(w http.ResponseWriter, r *http.Request) error {
	d.h.ServeHTTP(w, r)
	return nil
}
