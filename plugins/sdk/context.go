package sdk

import (
	"bytes"
	"context"
	"io"
	"net"
)

type listenerKey struct{}

// ListenerFrom returns the name of the kernel listener a call arrived on,
// from the call's context (r.Context() for HTTP), or "".
func ListenerFrom(ctx context.Context) string {
	s, _ := ctx.Value(listenerKey{}).(string)
	return s
}

// addr is a net.Addr the kernel reported as a string.
type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }

var _ net.Addr = addr{}

// localAddr is the kernel's local address of the client's connection, as
// net/http keeps it under http.LocalAddrContextKey.
func localAddr(s string) addr { return addr{network: "tcp", s: s} }

// bytesBody is a request body that arrived whole with the request.
type bytesBody struct{ *bytes.Reader }

func newBytesBody(b []byte) io.ReadCloser { return bytesBody{bytes.NewReader(b)} }

func (bytesBody) Close() error { return nil }
