package proto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

// CallsFDsEnv names the environment variable in which the kernel tells a
// plugin process the descriptors of the sockets it may serve calls on, as
// a comma-separated list ("3,4,5,6"). A plugin that does serve them says so
// with DescribeResponse.framed_calls; the kernel then sends its calls there,
// framed as FramedConn does, rather than on gRPC Calls streams. A plugin
// that ignores them (one not written with this SDK, say) gets Calls
// streams. The framing costs less than gRPC's per message, which is what
// the hot path of every request pays for twice.
const CallsFDsEnv = "SWITCHYARD_CALLS_FDS"

// maxPending bounds the bytes a FramedConn holds for its writer. A Send
// beyond it waits: the peer reads nothing, and whoever watches for blocked
// sends (the kernel does) may then Close the connection.
const maxPending = 1 << 20

// gatherBelow is the size of queued frames under which the writer yields
// once before writing, to gather more.
const gatherBelow = 16 << 10

// ErrFrameTooLarge is returned for a message whose encoding is larger than
// the connection's limit, and breaks a connection that receives one.
var ErrFrameTooLarge = errors.New("proto: frame larger than the limit")

// Message is a message FramedConn carries: every message of this package,
// with the methods vtprotobuf generates for it (switchyard_vtproto.pb.go):
// marshalling code per message, without the reflection of proto.Marshal.
// Unlike proto.Marshal and proto.Unmarshal they do not insist that string
// fields hold UTF-8, which HTTP header values need not be.
type Message interface {
	proto.Message
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// FramedConn carries protobuf messages on a stream socket, each as a
// four-byte big-endian length and then the message's encoding: Out messages
// one way, In messages the other. Send queues a message for a writer
// goroutine, which writes whatever has queued meanwhile in one system call,
// so that under load many messages share one write; Recv reads the next
// message. Send and CloseSend may be called from any goroutine; Recv from
// one at a time. Close breaks the connection, ending a blocked Send or
// Recv, and waits for the writer.
type FramedConn[Out, In Message] struct {
	conn  net.Conn
	max   int
	stall time.Duration // a write blocked this long breaks the connection; 0: no bound
	newIn func() In

	r    *bufio.Reader
	rbuf []byte // Recv's scratch

	mu        sync.Mutex
	more      sync.Cond // the writer waits on it for frames; guarded by mu
	room      sync.Cond // Send waits on it for room; guarded by mu
	queued    []byte    // frames for the writer; guarded by mu
	sendDone  bool      // CloseSend was called; guarded by mu
	err       error     // why the connection ended for sending; guarded by mu
	closeOnce sync.Once
	written   chan struct{} // closed when the writer has exited
}

// NewFramedConn starts a FramedConn on conn, taking it over. max bounds
// the encoding of one message either way. A write that blocks for stall
// (the peer reads nothing: it is stopped or wedged) breaks the connection,
// which ends every Send and Recv; 0 waits for ever. newIn allocates a
// message for Recv.
func NewFramedConn[Out, In Message](conn net.Conn, max int, stall time.Duration, newIn func() In) *FramedConn[Out, In] {
	c := &FramedConn[Out, In]{
		conn:    conn,
		max:     max,
		stall:   stall,
		newIn:   newIn,
		r:       bufio.NewReaderSize(conn, 64<<10),
		written: make(chan struct{}),
	}
	c.more.L, c.room.L = &c.mu, &c.mu
	go c.write()
	return c
}

// Send queues m. It returns an error once the connection is broken or
// closed for sending, and for a message over the size limit (which breaks
// nothing). It waits while maxPending bytes are already queued.
func (c *FramedConn[Out, In]) Send(m Out) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.sendDone && len(c.queued) >= maxPending {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		return c.err
	case c.sendDone:
		return errors.New("proto: framed connection closed for sending")
	}
	n := m.SizeVT()
	if n > c.max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, c.max)
	}
	start := len(c.queued)
	b := slices.Grow(c.queued, 4+n)[:start+4+n]
	if _, err := m.MarshalToSizedBufferVT(b[start+4:]); err != nil {
		return err
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	c.queued = b
	if start == 0 {
		c.more.Signal()
	}
	return nil
}

// ConcurrentSend marks FramedConn as taking Send from many goroutines at
// once, each message whole.
func (c *FramedConn[Out, In]) ConcurrentSend() {}

// CloseSend tells the peer no more messages come, once those queued are
// written: it shuts the socket down for writing, and the peer's Recv
// returns io.EOF.
func (c *FramedConn[Out, In]) CloseSend() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.sendDone = true
	c.more.Signal()
	c.room.Broadcast()
	return nil
}

// write runs until the connection is closed for sending or broken.
func (c *FramedConn[Out, In]) write() {
	defer close(c.written)
	var spare []byte
	for {
		c.mu.Lock()
		for len(c.queued) == 0 && c.err == nil && !c.sendDone {
			c.more.Wait()
			if len(c.queued) > 0 && len(c.queued) < gatherBelow {
				// Woken for a small frame: let the goroutines that are
				// about to queue more (under load, the answers of other
				// calls) run first, so one write carries them all.
				// Alone on the machine, this returns at once.
				c.mu.Unlock()
				runtime.Gosched()
				c.mu.Lock()
			}
		}
		if c.err != nil || len(c.queued) == 0 {
			// Broken, or closed for sending with nothing left.
			done := c.err == nil
			c.mu.Unlock()
			if done {
				if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			}
			return
		}
		buf := c.queued
		c.queued = spare[:0]
		c.room.Broadcast()
		c.mu.Unlock()
		if c.stall > 0 {
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.stall))
		}
		if _, err := c.conn.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("a write blocked for %v: the peer reads nothing", c.stall)
			}
			c.fail(fmt.Errorf("proto: framed write: %w", err))
			// Recv ends too: the connection is of no more use.
			_ = c.conn.Close()
			return
		}
		// Keep the larger buffer, but not one a huge message grew.
		if cap(buf) <= 4*maxPending {
			spare = buf
		} else {
			spare = nil
		}
	}
}

func (c *FramedConn[Out, In]) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.queued = nil
	c.more.Broadcast()
	c.room.Broadcast()
	c.mu.Unlock()
}

// Recv returns the next message. It returns io.EOF when the peer closed
// its side cleanly between messages.
func (c *FramedConn[Out, In]) Recv() (In, error) {
	var zero In
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return zero, fmt.Errorf("proto: framed read: truncated length: %w", err)
		}
		return zero, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > c.max {
		return zero, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, c.max)
	}
	if cap(c.rbuf) < n {
		c.rbuf = make([]byte, n)
	}
	b := c.rbuf[:n]
	if _, err := io.ReadFull(c.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return zero, fmt.Errorf("proto: framed read: truncated message: %w", err)
	}
	m := c.newIn()
	if err := m.UnmarshalVT(b); err != nil {
		return zero, fmt.Errorf("proto: framed read: %w", err)
	}
	// A buffer a huge message grew is not kept.
	if cap(c.rbuf) > maxPending {
		c.rbuf = nil
	}
	return m, nil
}

// Close breaks the connection: queued messages are dropped, Send fails,
// a Recv in progress returns an error. It waits for the writer to exit.
func (c *FramedConn[Out, In]) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.fail(net.ErrClosed)
		err = c.conn.Close()
	})
	<-c.written
	return err
}

// Finish closes the connection for sending, waits until what was queued is
// written (or the connection broke), and closes it.
func (c *FramedConn[Out, In]) Finish() error {
	_ = c.CloseSend()
	<-c.written
	return c.Close()
}
