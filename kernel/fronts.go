package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/switchyard-dev/switchyard/kernel/config"
	dnsl "github.com/switchyard-dev/switchyard/listeners/dns"
	httpl "github.com/switchyard-dev/switchyard/listeners/http"
	"github.com/switchyard-dev/switchyard/listeners/line"
	"github.com/switchyard-dev/switchyard/listeners/scgi"
)

// front is a protocol front end serving one listener's socket; the
// packages under listeners provide them.
type front interface {
	// Serve serves connections from ln until Shutdown, then returns nil.
	Serve(ln net.Listener) error
	// Shutdown stops accepting and lets work in flight finish within ctx.
	Shutdown(ctx context.Context) error
	counters() frontStats
	// refused counts the connections closed at once because the
	// listener's max_connections were open.
	refused() int64
}

// frontStats are a front end's counters, as `ctl listeners` shows them.
type frontStats struct {
	Connections int64 // open now
	Accepted    int64
	Requests    int64
	Errors      int64
}

// newFront returns the front end for lc's protocol on sock, dispatching to
// rt. Line connections take their ids from connIDs.
func newFront(lc *config.Listener, rt *route, sock *socket, log *slog.Logger, connIDs *atomic.Uint64) (front, error) {
	switch lc.Protocol {
	case "dns":
		return dnsFront{dnsl.New(dnsl.Config{
			Name:           lc.Name,
			MaxInFlight:    lc.MaxInflight,
			TCPIdleTimeout: lc.IdleTimeout.D(),
			MaxConnections: lc.MaxConnections,
			Logger:         log,
		}, rt), sock.pc}, nil
	case "http":
		return httpFront{httpl.New(httpl.Config{
			Name:              lc.Name,
			MaxBody:           lc.MaxBody,
			MaxHeaderBytes:    lc.MaxHeaderBytes,
			ReadHeaderTimeout: lc.ReadHeaderTimeout.D(),
			ReadTimeout:       lc.ReadTimeout.D(),
			IdleTimeout:       lc.IdleTimeout.D(),
			WriteTimeout:      lc.WriteTimeout.D(),
			MaxConnections:    lc.MaxConnections,
			Logger:            log,
		}, rt)}, nil
	case "line":
		return lineFront{line.New(line.Config{
			Name:   lc.Name,
			Limits: lineLimits(lc),
			NextID: func() uint64 { return connIDs.Add(1) },
			Logger: log,
		}, rt)}, nil
	case "scgi":
		return scgiFront{scgi.New(scgi.Config{
			Name:           lc.Name,
			MaxHeaderBytes: lc.MaxHeaderBytes,
			MaxBody:        lc.MaxBody,
			Timeout:        lc.Timeout.D(),
			MaxConnections: lc.MaxConnections,
			Logger:         log,
		}, rt)}, nil
	}
	return nil, fmt.Errorf("listener %q: protocol %q has no front end in this build", lc.Name, lc.Protocol)
}

func (f lineFront) refused() int64 { return f.Refused() }

type httpFront struct{ *httpl.Server }

func (f httpFront) refused() int64 { return f.Refused() }

func (f httpFront) counters() frontStats {
	s := f.Stats()
	return frontStats{Connections: s.Connections, Accepted: s.Accepted, Requests: s.Requests, Errors: s.Errors}
}

type dnsFront struct {
	*dnsl.Server
	pc net.PacketConn
}

// Serve serves DNS on the socket's UDP side and on ln, its TCP side.
func (f dnsFront) Serve(ln net.Listener) error {
	return f.Server.Serve(&packetView{PacketConn: f.pc}, ln)
}

func (f dnsFront) refused() int64 { return f.Refused() }

func (f dnsFront) counters() frontStats {
	s := f.Stats()
	return frontStats{Connections: s.Connections, Accepted: s.Accepted, Requests: s.Requests, Errors: s.Errors}
}

type scgiFront struct{ *scgi.Server }

func (f scgiFront) refused() int64 { return f.Refused() }

func (f scgiFront) counters() frontStats {
	s := f.Stats()
	return frontStats{Connections: s.Connections, Accepted: s.Accepted, Requests: s.Requests, Errors: s.Errors}
}
