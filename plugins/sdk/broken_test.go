package sdk

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// TestBrokenStreamCancelsCalls breaks a framed connection while a handler
// waits on its request's context: the kernel's end sends half a frame and
// closes (a clean close, between frames, is the kernel draining the process
// and lets calls finish). The context must end, with a cause that says the
// stream broke, and the stream's goroutines must finish.
func TestBrokenStreamCancelsCalls(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	svc := NewService(Plugin{Name: "t", Version: "v0", HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		ended <- context.Cause(r.Context())
	})}, nil).(*service)
	// A real socket pair, as the kernel passes the process.
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ends [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "calls")
		ends[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	kernelEnd, pluginEnd := ends[0], ends[1]
	served := make(chan struct{})
	go func() {
		defer close(served)
		svc.serveFramed(pluginEnd)
	}()
	frame, err := gproto.Marshal(&proto.Call{Id: 1, TimeoutNs: int64(time.Hour), Frame: &proto.Call_Http{Http: &proto.HTTPRequest{
		Method: "GET", Uri: "/", Proto: "HTTP/1.1", Host: "example.test", BodyEnd: true, Credit: 1 << 20,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	writeErr := make(chan error, 1)
	go func() {
		_, err := kernelEnd.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...))
		writeErr <- err
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not start")
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = kernelEnd.Write([]byte{0, 0}) // half a length
		_ = kernelEnd.Close()
	}()
	select {
	case cause := <-ended:
		if cause == nil || errors.Is(cause, context.DeadlineExceeded) || !strings.Contains(cause.Error(), "broken") {
			t.Errorf("the handler's context ended with cause %v, want the broken stream", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context did not end when the stream broke")
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("serveFramed did not return")
	}
}
