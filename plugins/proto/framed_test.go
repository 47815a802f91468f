package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns two framed connections on a real socket pair: calls go from
// the first to the second, replies back.
func pair(t *testing.T, max int) (*FramedConn[*Call, *Reply], *FramedConn[*Reply, *Call]) {
	t.Helper()
	a, b := socketPair(t)
	ca := NewFramedConn[*Call, *Reply](a, max, 0, func() *Reply { return new(Reply) })
	cb := NewFramedConn[*Reply, *Call](b, max, 0, func() *Call { return new(Call) })
	t.Cleanup(func() {
		ca.Close()
		cb.Close()
	})
	return ca, cb
}

func socketPair(t *testing.T) (net.Conn, net.Conn) { return socketPairTB(t) }

func socketPairTB(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		c, err := fileConn(fd)
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	return cs[0], cs[1]
}

func TestFramedRoundTrip(t *testing.T) {
	a, b := pair(t, 1<<20)
	const senders, each = 8, 500
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := uint64(s*each + i + 1)
				body := strings.Repeat("x", i%300)
				if err := a.Send(&Call{Id: id, Frame: &Call_Body{Body: &Body{Data: []byte(body)}}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := map[uint64]bool{}
	for range senders * each {
		m, err := b.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id := m.GetId()
		if seen[id] {
			t.Fatalf("id %d twice", id)
		}
		seen[id] = true
		if want := int((id - 1) % each % 300); len(m.GetBody().GetData()) != want {
			t.Fatalf("id %d: %d bytes of body, want %d", id, len(m.GetBody().GetData()), want)
		}
	}
	wg.Wait()
	// CloseSend ends the peer's Recv with io.EOF once everything is read.
	if err := a.Send(&Call{Id: 99999}); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Recv(); err != nil || m.GetId() != 99999 {
		t.Fatalf("last frame: %v %v", m, err)
	}
	if _, err := b.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want io.EOF", err)
	}
	if err := a.Send(&Call{Id: 1}); err == nil {
		t.Fatal("Send after CloseSend succeeded")
	}
	// The other way still works after a half close.
	if err := b.Send(&Reply{Id: 7}); err != nil {
		t.Fatal(err)
	}
	if m, err := a.Recv(); err != nil || m.GetId() != 7 {
		t.Fatalf("reply after half close: %v %v", m, err)
	}
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after Finish: %v, want io.EOF", err)
	}
}

func TestFramedTooLarge(t *testing.T) {
	a, b := pair(t, 1024)
	err := a.Send(&Call{Id: 1, Frame: &Call_Body{Body: &Body{Data: make([]byte, 2048)}}})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize Send: %v", err)
	}
	// Nothing of it went out, and the connection carries on.
	if err := a.Send(&Call{Id: 2}); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Recv(); err != nil || m.GetId() != 2 {
		t.Fatalf("after an oversize Send: %v %v", m, err)
	}
}

// TestFramedBadInput: what a broken or hostile peer writes gives Recv a
// clear error, never a message.
func TestFramedBadInput(t *testing.T) {
	frame := func(n uint32, body []byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), body...)
	}
	for _, tc := range []struct {
		name  string
		wire  []byte
		want  string
		isEOF bool
	}{
		{name: "nothing", wire: nil, isEOF: true},
		{name: "truncated length", wire: []byte{0, 0}, want: "truncated length"},
		{name: "truncated message", wire: frame(10, []byte{8, 1}), want: "truncated message"},
		{name: "length over the limit", wire: frame(1<<30, nil), want: "larger than the limit"},
		{name: "not protobuf", wire: frame(3, []byte{0xff, 0xff, 0xff}), want: "framed read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, peer := socketPair(t)
			c := NewFramedConn[*Reply, *Call](peer, 1<<20, 0, func() *Call { return new(Call) })
			defer c.Close()
			if _, err := raw.Write(tc.wire); err != nil {
				t.Fatal(err)
			}
			raw.Close()
			m, err := c.Recv()
			switch {
			case err == nil:
				t.Fatalf("Recv gave %v", m)
			case tc.isEOF:
				if !errors.Is(err, io.EOF) {
					t.Fatalf("Recv: %v, want io.EOF", err)
				}
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Recv: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestFramedPeerNotReading: with a peer that reads nothing, Send queues up
// to its bound and then waits; Close ends the wait.
func TestFramedPeerNotReading(t *testing.T) {
	raw, peer := socketPair(t)
	defer raw.Close()
	c := NewFramedConn[*Reply, *Call](peer, 1<<20, 0, func() *Call { return new(Call) })
	body := make([]byte, 64<<10)
	blocked := make(chan error, 1)
	go func() {
		for {
			if err := c.Send(&Reply{Id: 1, Frame: &Reply_Body{Body: &Body{Data: body}}}); err != nil {
				blocked <- err
				return
			}
		}
	}()
	select {
	case err := <-blocked:
		t.Fatalf("Send failed before Close: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Close()
	}()
	select {
	case err := <-blocked:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Send after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a blocked Send")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}

func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "pair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("fd %d: %w", fd, err)
	}
	return c, nil
}

// FuzzFramedRecv: whatever bytes arrive, Recv returns messages or an
// error, never panics, and a message it returns re-encodes within the
// limit.
func FuzzFramedRecv(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 8, 1})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 10, 8})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, wire []byte) {
		raw, peer := socketPairTB(t)
		c := NewFramedConn[*Reply, *Call](peer, 4096, 0, func() *Call { return new(Call) })
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			raw.Write(wire)
			raw.Close()
		}()
		defer func() {
			c.Close() // ends a write the early return left blocked
			<-wrote
		}()
		for {
			m, err := c.Recv()
			if err != nil {
				return
			}
			if m == nil {
				t.Fatal("nil message without an error")
			}
		}
	})
}

// TestFramedStall: a write that blocks for the stall timeout (the peer
// reads nothing) breaks the connection: Send and Recv both end.
func TestFramedStall(t *testing.T) {
	raw, peer := socketPair(t)
	defer raw.Close()
	c := NewFramedConn[*Reply, *Call](peer, 1<<20, 200*time.Millisecond, func() *Call { return new(Call) })
	defer c.Close()
	body := make([]byte, 64<<10)
	var err error
	for err == nil {
		err = c.Send(&Reply{Id: 1, Frame: &Reply_Body{Body: &Body{Data: body}}})
	}
	if !strings.Contains(err.Error(), "blocked for 200ms") {
		t.Fatalf("Send after a stall: %v", err)
	}
	if _, err := c.Recv(); err == nil {
		t.Fatal("Recv after a stall succeeded")
	}
}
