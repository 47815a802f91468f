package sdk

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
)

type listenerKey struct{}

// ListenerFrom returns the name of the kernel listener a call arrived on,
// from the call's context (r.Context() for HTTP), or "".
func ListenerFrom(ctx context.Context) string {
	s, _ := ctx.Value(listenerKey{}).(string)
	return s
}

func withListener(ctx context.Context, name string) context.Context {
	if name == "" {
		return ctx
	}
	return context.WithValue(ctx, listenerKey{}, name)
}

// addr is a net.Addr the kernel reported as a string.
type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }

var _ net.Addr = addr{}

// contextWithLocalAddr stores the kernel's local address of the client's
// connection where net/http keeps it (http.LocalAddrContextKey).
func contextWithLocalAddr(ctx context.Context, s string) context.Context {
	return context.WithValue(ctx, http.LocalAddrContextKey, net.Addr(addr{network: "tcp", s: s}))
}

// bytesBody is a request body that arrived whole with the request.
type bytesBody struct{ *bytes.Reader }

func newBytesBody(b []byte) io.ReadCloser { return bytesBody{bytes.NewReader(b)} }

func (bytesBody) Close() error { return nil }
