package sdk

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Errors of the shared store.
var (
	// ErrNotFound: Get or Delete of a key the store does not hold.
	ErrNotFound = errors.New("sdk: no such key")
	// ErrBadKey: an empty key, one over 1 KiB, or one that is not UTF-8 or
	// holds a NUL byte; or a value over the store's limit.
	ErrBadKey = errors.New("sdk: bad key or value")
	// ErrNoKernel: the Host is not connected to a kernel (a plugin running
	// standalone), so there is no store.
	ErrNoKernel = errors.New("sdk: not connected to a kernel")
)

// Entry is one key of a List and the size of its value.
type Entry struct {
	Key  string
	Size int64
}

// The shared store. A plugin's key K is kept by the kernel as SLOT/K, so
// plugins in different slots never see each other's keys; keys that begin
// "shared/" are common to every plugin. A Put or Delete that returned nil is
// on disk: it survives a crash of the kernel. Store calls travel to the
// kernel over the Host connection and honour ctx.

// Get returns the value of key, or an error wrapping ErrNotFound.
func (h *Host) Get(ctx context.Context, key string) ([]byte, error) {
	if h.client == nil {
		return nil, ErrNoKernel
	}
	res, err := h.client.Get(ctx, &proto.GetRequest{Key: key}, grpc.MaxCallRecvMsgSize(MaxMessageSize))
	if err != nil {
		return nil, storeError("get", key, err)
	}
	return res.GetValue(), nil
}

// Put stores value under key and returns once it is durable.
func (h *Host) Put(ctx context.Context, key string, value []byte) error {
	if h.client == nil {
		return ErrNoKernel
	}
	_, err := h.client.Put(ctx, &proto.PutRequest{Key: key, Value: value})
	return storeError("put", key, err)
}

// Delete removes key and returns once that is durable; a key the store does
// not hold is an error wrapping ErrNotFound.
func (h *Host) Delete(ctx context.Context, key string) error {
	if h.client == nil {
		return ErrNoKernel
	}
	_, err := h.client.Delete(ctx, &proto.DeleteRequest{Key: key})
	return storeError("delete", key, err)
}

// List returns the plugin's keys that begin with prefix, in byte order,
// with the sizes of their values. A prefix that begins "shared/" lists
// shared keys.
func (h *Host) List(ctx context.Context, prefix string) ([]Entry, error) {
	if h.client == nil {
		return nil, ErrNoKernel
	}
	res, err := h.client.List(ctx, &proto.ListRequest{Prefix: prefix}, grpc.MaxCallRecvMsgSize(MaxMessageSize))
	if err != nil {
		return nil, storeError("list", prefix, err)
	}
	es := make([]Entry, 0, len(res.GetEntries()))
	for _, e := range res.GetEntries() {
		es = append(es, Entry{Key: e.GetKey(), Size: e.GetSize()})
	}
	return es, nil
}

// storeError turns a Host RPC's error into one that errors.Is can test.
func storeError(op, key string, err error) error {
	if err == nil {
		return nil
	}
	s, _ := status.FromError(err)
	switch s.Code() {
	case codes.NotFound:
		return fmt.Errorf("sdk: store %s %q: %w", op, key, ErrNotFound)
	case codes.InvalidArgument:
		return fmt.Errorf("sdk: store %s %q: %w: %s", op, key, ErrBadKey, s.Message())
	case codes.Canceled:
		return fmt.Errorf("sdk: store %s %q: %w", op, key, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("sdk: store %s %q: %w", op, key, context.DeadlineExceeded)
	}
	return fmt.Errorf("sdk: store %s %q: %w", op, key, err)
}
