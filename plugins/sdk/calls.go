package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/internal/workpool"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// callStream serves one Calls stream: it reads frames from the kernel, starts
// a goroutine per call, and serialises replies onto the stream.
type callStream struct {
	svc    *service
	stream callsStream
	base   context.Context // the calls' values come from it; never done
	stop   func() bool     // stops cancelling the calls when the stream's context ends

	sendMu     sync.Mutex // one sender at a time, unless concurrent
	concurrent bool       // stream takes whole messages from many goroutines (proto.FramedConn)

	mu     sync.Mutex
	calls  map[uint64]*call // guarded by mu
	broken bool             // the calls were cancelled: calls begun now start cancelled; guarded by mu

	wg      sync.WaitGroup // one per running call
	workers *workpool.Pool // the goroutines calls run on
}

// callsStream is what calls arrive on: a gRPC Calls stream, or a framed
// connection the kernel passed the process (see proto.CallsFDsEnv).
type callsStream interface {
	Send(*proto.Reply) error
	Recv() (*proto.Call, error)
}

// isConcurrent reports whether stream takes sends from many goroutines.
func isConcurrent(stream callsStream) bool {
	_, ok := stream.(interface{ ConcurrentSend() })
	return ok
}

// newCallStream serves stream; parent ends with the stream.
func newCallStream(svc *service, stream callsStream, parent context.Context) *callStream {
	s := &callStream{
		concurrent: isConcurrent(stream),
		svc:        svc,
		stream:     stream,
		base:       context.WithoutCancel(parent),
		calls:      make(map[uint64]*call),
		workers:    workpool.New(),
	}
	// The calls are not children of parent, which would register each
	// with it under one lock; the stream cancels them itself.
	s.stop = context.AfterFunc(parent, func() { s.cancelCalls(context.Cause(parent)) })
	return s
}

// cancelCalls cancels every call in flight with cause.
func (s *callStream) cancelCalls(cause error) {
	s.mu.Lock()
	calls := make([]*call, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
	}
	s.broken = true
	s.mu.Unlock()
	for _, c := range calls {
		c.cancel(cause)
	}
}

// run reads frames until the kernel closes its side. On a clean close (the
// kernel has drained this process) calls still running finish and send their
// replies; on a broken stream they are cancelled. run returns once every call
// goroutine has exited.
func (s *callStream) run() error {
	defer s.workers.Stop()
	defer s.stop()
	for {
		m, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			s.wg.Wait()
			return nil
		}
		if err != nil {
			s.cancelCalls(fmt.Errorf("sdk: calls stream broken: %w", err))
			s.wg.Wait()
			return err
		}
		s.dispatch(m)
	}
}

func (s *callStream) dispatch(m *proto.Call) {
	switch f := m.GetFrame().(type) {
	case *proto.Call_Http:
		s.startHTTP(m.GetId(), m.GetTimeoutNs(), f.Http)
	case *proto.Call_Dns:
		s.startDNS(m.GetId(), m.GetTimeoutNs(), f.Dns)
	case *proto.Call_Line:
		s.startLine(m.GetId(), m.GetTimeoutNs(), f.Line)
	case *proto.Call_Tick:
		s.startTick(m.GetId(), m.GetTimeoutNs(), f.Tick)
	case *proto.Call_Body:
		if c := s.lookup(m.GetId()); c != nil && c.body != nil {
			c.body.push(f.Body)
		}
	case *proto.Call_Credit:
		if c := s.lookup(m.GetId()); c != nil {
			c.addCredit(int64(f.Credit.GetBytes()))
		}
	case *proto.Call_Cancel:
		if c := s.lookup(m.GetId()); c != nil {
			c.cancel(errCancelled{reason: f.Cancel.GetReason()})
		}
	default:
		// A frame from a newer kernel that this SDK does not know. If it
		// opens a call, end that call so the kernel does not wait for it.
		if s.lookup(m.GetId()) == nil {
			_ = s.send(failure(m.GetId(), "plugin does not support this kind of call"))
		}
	}
}

// errCancelled is the cause of a call's context when the kernel cancels it.
type errCancelled struct{ reason string }

func (e errCancelled) Error() string {
	if e.reason == "" {
		return "call cancelled by the kernel"
	}
	return "call cancelled by the kernel: " + e.reason
}

func (s *callStream) lookup(id uint64) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

// begin registers a call and returns it with its context. The context
// carries the call's deadline and the plugin's Host. With streamed, the
// call's request body arrives in Body frames after the first one, which
// carried first.
func (s *callStream) begin(id uint64, timeoutNS int64, credit uint32, streamed bool, first []byte) *call {
	ctx := newCallCtx(s.base, time.Duration(timeoutNS), s.svc.currentHost())
	c := &call{
		id:     id,
		ctx:    ctx,
		credit: int64(credit),
		wake:   make(chan struct{}, 1),
	}
	if streamed {
		c.body = newBodyPipe(c.ctx, first)
	}
	s.mu.Lock()
	s.calls[id] = c
	broken := s.broken
	s.mu.Unlock()
	if broken {
		c.cancel(errors.New("sdk: calls stream broken"))
	}
	return c
}

// end unregisters a call and releases its context.
func (s *callStream) end(c *call) {
	s.mu.Lock()
	if s.calls[c.id] == c {
		delete(s.calls, c.id)
	}
	s.mu.Unlock()
	c.cancel(context.Canceled)
	if c.body != nil {
		c.body.close()
	}
}

// startSingle runs a call whose answer is one frame (a DNS query, a line
// event, a tick) on a worker: serve returns the frame, whose id it fills
// in, or an error that ends the call with a Failure.
func (s *callStream) startSingle(id uint64, timeoutNS int64, serve func(*call) (*proto.Reply, error)) {
	c := s.begin(id, timeoutNS, 0, false, nil)
	s.wg.Add(1)
	s.workers.Run(func() {
		defer s.wg.Done()
		defer s.end(c)
		r, err := serve(c)
		if err != nil {
			_ = s.send(failure(c.id, err.Error()))
			return
		}
		r.Id = c.id
		_ = s.send(r)
	})
}

// send writes one reply frame. gRPC streams allow one sender at a time; a
// framed connection serialises its senders itself.
func (s *callStream) send(r *proto.Reply) error {
	if s.concurrent {
		return s.stream.Send(r)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(r)
}

func failure(id uint64, msg string) *proto.Reply {
	return &proto.Reply{Id: id, Frame: &proto.Reply_Failure{Failure: &proto.Failure{Message: msg}}}
}

// call is one request in flight in the plugin.
type call struct {
	id   uint64
	ctx  *callCtx
	body *bodyPipe // nil when the whole body came with the first frame

	mu     sync.Mutex
	credit int64         // response bytes the kernel will accept; guarded by mu
	wake   chan struct{} // signalled when credit grows
}

// cancel ends the call's context with cause.
func (c *call) cancel(cause error) { c.ctx.Cancel(cause) }

func (c *call) addCredit(n int64) {
	c.mu.Lock()
	c.credit += n
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take waits until the kernel accepts more response bytes and reserves up to
// n of them.
func (c *call) take(n int) (int, error) {
	for {
		c.mu.Lock()
		if c.credit > 0 {
			k := int64(n)
			if k > c.credit {
				k = c.credit
			}
			c.credit -= k
			c.mu.Unlock()
			return int(k), nil
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			return 0, context.Cause(c.ctx)
		}
	}
}

// bodyPipe is a request body that arrives in frames from the kernel. The
// kernel bounds a body's size, so frames are queued without flow control.
type bodyPipe struct {
	ctx  context.Context
	mu   sync.Mutex
	bufs [][]byte // guarded by mu
	done bool     // no more frames; guarded by mu
	err  error    // returned once bufs are drained; guarded by mu
	wake chan struct{}
}

func newBodyPipe(ctx context.Context, first []byte) *bodyPipe {
	p := &bodyPipe{ctx: ctx, wake: make(chan struct{}, 1)}
	if len(first) > 0 {
		p.bufs = append(p.bufs, first)
	}
	return p
}

func (p *bodyPipe) push(b *proto.Body) {
	p.mu.Lock()
	if !p.done {
		if len(b.GetData()) > 0 {
			p.bufs = append(p.bufs, b.GetData())
		}
		if b.GetEnd() {
			p.done = true
			p.err = io.EOF
			if msg := b.GetError(); msg != "" {
				p.err = errors.New(msg)
			}
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close drops what is queued and what still arrives, and wakes a Read
// that waits, as closing an os.Pipe does.
func (p *bodyPipe) close() {
	p.mu.Lock()
	p.bufs = nil
	if !p.done {
		p.done = true
		p.err = errors.New("sdk: read on closed request body")
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *bodyPipe) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if len(p.bufs) > 0 {
			n := copy(b, p.bufs[0])
			if n == len(p.bufs[0]) {
				p.bufs[0] = nil
				p.bufs = p.bufs[1:]
			} else {
				p.bufs[0] = p.bufs[0][n:]
			}
			p.mu.Unlock()
			return n, nil
		}
		if p.done {
			err := p.err
			p.mu.Unlock()
			return 0, err
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-p.ctx.Done():
			return 0, context.Cause(p.ctx)
		}
	}
}

func (p *bodyPipe) Close() error {
	p.close()
	return nil
}
