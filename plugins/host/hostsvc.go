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
func NewHostService(log *slog.Logger, store Store) proto.HostServer {
	return &hostServer{log: log, store: store}
}

// hostServer is the kernel's Host service for one plugin process.
type hostServer struct {
	proto.UnimplementedHostServer
	log   *slog.Logger
	store Store // nil: no store
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

var errNoStore = status.Error(codes.Unavailable, "the kernel has no store")

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
