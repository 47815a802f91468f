package host

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Store is the shared store as the Host service offers it to one plugin.
// Keys are the plugin's own; the implementation maps them into the store's
// key space (the kernel keeps a plugin's key K as SLOT/K). Errors wrapping
// ErrNoKey and ErrBadKey reach the plugin as NOT_FOUND and INVALID_ARGUMENT.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, error)
	// Put and Delete return once the change is durable.
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]*proto.Entry, error)
}

// Conns are the line connections the Host service lets one plugin reach:
// those of the listeners that route to it. Errors wrapping ErrNoConn and
// ErrConnFull reach the plugin as NOT_FOUND and RESOURCE_EXHAUSTED.
type Conns interface {
	// Send queues data on connection id without waiting for the client.
	Send(ctx context.Context, id uint64, data []byte) error
	// Close ends connection id's session gracefully, without waiting.
	Close(ctx context.Context, id uint64) error
	// List returns the live connections (of listener, unless it is ""),
	// with their session state.
	List(ctx context.Context, listener string) ([]*proto.Conn, error)
}

// Errors of Conns.
var (
	ErrNoConn   = errors.New("host: no such connection")
	ErrConnFull = errors.New("host: connection output full")
)

// Errors a Store returns for the plugin's mistakes.
var (
	ErrNoKey  = errors.New("host: no such key")
	ErrBadKey = errors.New("host: bad key or value")
)

// NewHostService returns the kernel's Host service for one plugin, logging
// into log (which the caller tags with the plugin's slot, generation and
// pid) and keeping its keys in store; a nil store answers UNAVAILABLE.
// Start serves it to each process it launches; harnesses such as sdktest
// serve it themselves.
func NewHostService(log *slog.Logger, store Store, conns Conns) proto.HostServer {
	return &hostServer{log: log, store: store, conns: conns}
}

// hostServer is the kernel's Host service for one plugin process.
type hostServer struct {
	proto.UnimplementedHostServer
	log   *slog.Logger
	store Store // nil: no store
	conns Conns // nil: no line connections
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

func (h *hostServer) Get(ctx context.Context, req *proto.GetRequest) (*proto.GetResponse, error) {
	if h.store == nil {
		return nil, errNoStore
	}
	v, err := h.store.Get(ctx, req.GetKey())
	if err != nil {
		return nil, storeStatus(err)
	}
	return &proto.GetResponse{Value: v}, nil
}

func (h *hostServer) Put(ctx context.Context, req *proto.PutRequest) (*proto.PutResponse, error) {
	if h.store == nil {
		return nil, errNoStore
	}
	if err := h.store.Put(ctx, req.GetKey(), req.GetValue()); err != nil {
		return nil, storeStatus(err)
	}
	return &proto.PutResponse{}, nil
}

func (h *hostServer) Delete(ctx context.Context, req *proto.DeleteRequest) (*proto.DeleteResponse, error) {
	if h.store == nil {
		return nil, errNoStore
	}
	if err := h.store.Delete(ctx, req.GetKey()); err != nil {
		return nil, storeStatus(err)
	}
	return &proto.DeleteResponse{}, nil
}

func (h *hostServer) List(ctx context.Context, req *proto.ListRequest) (*proto.ListResponse, error) {
	if h.store == nil {
		return nil, errNoStore
	}
	es, err := h.store.List(ctx, req.GetPrefix())
	if err != nil {
		return nil, storeStatus(err)
	}
	return &proto.ListResponse{Entries: es}, nil
}

func (h *hostServer) Send(ctx context.Context, req *proto.SendRequest) (*proto.SendResponse, error) {
	if h.conns == nil {
		return nil, errNoConns
	}
	if err := h.conns.Send(ctx, req.GetConnId(), req.GetData()); err != nil {
		return nil, connStatus(err)
	}
	return &proto.SendResponse{}, nil
}

func (h *hostServer) Close(ctx context.Context, req *proto.CloseRequest) (*proto.CloseResponse, error) {
	if h.conns == nil {
		return nil, errNoConns
	}
	if err := h.conns.Close(ctx, req.GetConnId()); err != nil {
		return nil, connStatus(err)
	}
	return &proto.CloseResponse{}, nil
}

func (h *hostServer) Conns(ctx context.Context, req *proto.ConnsRequest) (*proto.ConnsResponse, error) {
	if h.conns == nil {
		return &proto.ConnsResponse{}, nil
	}
	cs, err := h.conns.List(ctx, req.GetListener())
	if err != nil {
		return nil, connStatus(err)
	}
	return &proto.ConnsResponse{Conns: cs}, nil
}

var (
	errNoStore = status.Error(codes.Unavailable, "the kernel has no store")
	errNoConns = status.Error(codes.NotFound, "the plugin has no line connections")
)

// connStatus maps a Conns error to the gRPC status the plugin sees.
func connStatus(err error) error {
	switch {
	case errors.Is(err, ErrNoConn):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrConnFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return storeStatus(err)
}

// storeStatus maps a Store error to the gRPC status the plugin sees.
func storeStatus(err error) error {
	switch {
	case errors.Is(err, ErrNoKey):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrBadKey):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
