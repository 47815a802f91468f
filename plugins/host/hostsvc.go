package host

import (
	"context"
	"log/slog"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// NewHostService returns the kernel's Host service for one plugin, logging
// into log (which the caller tags with the plugin's slot, generation and
// pid). Start serves it to each process it launches; harnesses such as
// sdktest serve it themselves.
func NewHostService(log *slog.Logger) proto.HostServer {
	return &hostServer{log: log}
}

// hostServer is the kernel's Host service for one plugin process.
type hostServer struct {
	proto.UnimplementedHostServer
	log *slog.Logger
}

func (h *hostServer) Log(ctx context.Context, req *proto.LogRequest) (*proto.LogResponse, error) {
	t := time.Now()
	if ns := req.GetTimeUnixNano(); ns > 0 {
		t = time.Unix(0, ns)
	}
	attrs := make([]slog.Attr, 0, len(req.GetAttrs()))
	for _, a := range req.GetAttrs() {
		attrs = append(attrs, slog.String(a.GetKey(), a.GetValue()))
	}
	logRecord(ctx, h.log, slog.Level(req.GetLevel()), req.GetMessage(), t, attrs)
	return &proto.LogResponse{}, nil
}
