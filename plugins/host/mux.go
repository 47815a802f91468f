package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/callctx"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Errors a call can end with. The kernel maps them to each protocol's error
// answer (StatusFor does it for HTTP).
var (
	// ErrUnavailable: the plugin process or its connection went away before
	// the call was answered.
	ErrUnavailable = errors.New("host: plugin unavailable")
	// ErrFailed: the plugin reported that the call failed inside it.
	ErrFailed = errors.New("host: plugin failed the call")
	// ErrProtocol: the plugin sent something the protocol does not allow.
	ErrProtocol = errors.New("host: plugin broke the protocol")
	// ErrAborted: the call failed after the head of its answer had been
	// sent, so the only honest thing left is to cut the client off.
	ErrAborted = errors.New("host: answer aborted after its head was sent")
	// ErrBadRequest: the client's request could not be read.
	ErrBadRequest = errors.New("host: bad request")
	// ErrNotSent wraps an ErrUnavailable for a call that never reached the
	// plugin (its streams were already broken or draining) and consumed
	// nothing of the request: the caller may send it to another instance.
	ErrNotSent = errors.New("host: call not sent")
)

// errDraining is why a draining stream refuses new calls.
var errDraining = fmt.Errorf("%w: calls stream is draining", ErrUnavailable)

// maxSendBlock is how long one gRPC Send may block before the stream is
// declared broken. The SDK reads its streams eagerly, so a Send blocks on flow
// control only when the plugin process reads nothing at all (it is stopped,
// or wedged); without this bound every call on the stream would hang until
// the process is killed, whatever its deadline.
const maxSendBlock = 3 * time.Second

// callStream is one Calls stream to a plugin: calls are started on it with
// fresh ids, and a reader goroutine hands each reply frame to its call.
//
// A stream ends in one of two ways. Drain stops new calls and, once the last
// call in flight has ended, closes the send side; the plugin then ends the
// stream. A broken stream (the process died, Client.Close cancelled it, or
// the plugin stopped reading) fails every call in flight with ErrUnavailable.
type callStream struct {
	stream callsConn
	abort  func() // breaks the stream: cancels the gRPC stream, or closes the framed connection

	// sendLock admits one sender at a time on the gRPC stream; a channel, so
	// that a caller can stop waiting for its turn. Holding it also orders id
	// allocation, so ids go out on the wire in increasing order (the SDK
	// does not rely on that). A stream whose conn takes concurrent sends
	// (concurrent) does without it.
	sendLock   chan struct{}
	concurrent bool
	sent       bool          // CloseSend was called; guarded by sendLock
	sendSeq    uint64        // numbers the sends; guarded by sendLock
	sending    atomic.Uint64 // the send in progress, by number, or 0

	mu       sync.Mutex
	calls    map[uint64]*pending // guarded by mu
	nextID   uint64              // guarded by mu
	err      error               // why the stream ended; guarded by mu
	draining bool                // no new calls; guarded by mu

	done chan struct{} // closed when the reader has exited

	// The deadlines of calls whose context is a *callctx.Ctx are kept by
	// the stream, on one timer for all of them, so that waiting for their
	// answers arms no timer per call (see pending.nextOr).
	dmu    sync.Mutex
	dtimer *time.Timer // fires at darmed; guarded by dmu
	darmed time.Time   // zero: the timer is not armed; guarded by dmu
}

// callsConn is what a callStream sends calls on: a gRPC Calls stream, or a
// framed connection (proto.FramedConn).
type callsConn interface {
	Send(*proto.Call) error
	Recv() (*proto.Reply, error)
	CloseSend() error
}

// concurrentConn is a callsConn that takes sends from many goroutines at
// once and bounds a blocked send itself (proto.FramedConn, whose writer
// breaks the connection when a write blocks for its stall timeout).
type concurrentConn interface {
	callsConn
	ConcurrentSend()
}

func newCallStream(stream callsConn, abort func()) *callStream {
	_, concurrent := stream.(concurrentConn)
	return &callStream{
		stream:     stream,
		abort:      abort,
		sendLock:   make(chan struct{}, 1),
		concurrent: concurrent,
		calls:      make(map[uint64]*pending),
		done:       make(chan struct{}),
	}
}

// read runs until the stream ends, with the stream's send watchdog (for a
// conn that does not bound its sends itself); its owner waits on done.
func (s *callStream) read() {
	stop, watched := make(chan struct{}), make(chan struct{})
	if s.concurrent {
		close(watched)
	} else {
		go func() {
			defer close(watched)
			s.watch(stop)
		}()
	}
	defer func() {
		close(stop)
		<-watched
		s.stopDeadlines()
		close(s.done)
	}()
	for {
		r, err := s.stream.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		p := s.calls[r.GetId()]
		final := isFinal(r)
		if p != nil && final {
			delete(s.calls, r.GetId())
		}
		idle := s.idleLocked()
		s.mu.Unlock()
		if p != nil {
			p.push(r, final)
		}
		if idle {
			s.closeSend()
		}
	}
}

// isFinal reports whether r is the last frame of its call.
func isFinal(r *proto.Reply) bool {
	switch f := r.GetFrame().(type) {
	case *proto.Reply_Http:
		return f.Http.GetEnd()
	case *proto.Reply_Body:
		return f.Body.GetEnd()
	default:
		// A failure, or a frame this kernel does not know: either way the
		// call cannot go on.
		return true
	}
}

// fail ends every call on the stream with err.
func (s *callStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = fmt.Errorf("%w: calls stream: %v", ErrUnavailable, err)
	}
	calls := s.calls
	s.calls = make(map[uint64]*pending)
	err = s.err
	s.mu.Unlock()
	for _, p := range calls {
		p.fail(err)
	}
}

// usable reports whether the stream takes new calls.
func (s *callStream) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err == nil && !s.draining
}

// lock waits for the stream's turn to send, until ctx is done or the stream
// has ended.
func (s *callStream) lock(ctx context.Context) error {
	if s.concurrent {
		return nil
	}
	select {
	case s.sendLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err
	}
}

func (s *callStream) unlock() {
	if !s.concurrent {
		<-s.sendLock
	}
}

// sendLocked sends c; the caller holds sendLock. A Send that blocks for
// maxSendBlock breaks the stream, which ends the Send.
func (s *callStream) sendLocked(c *proto.Call) error {
	if s.concurrent {
		return s.stream.Send(c)
	}
	if s.sent {
		return errors.New("calls stream closed for sending")
	}
	s.sendSeq++
	s.sending.Store(s.sendSeq)
	err := s.stream.Send(c)
	s.sending.Store(0)
	return err
}

// watch breaks the stream when one Send stays blocked for maxSendBlock (the
// plugin reads nothing). One watchdog per stream, rather than a timer per
// send, keeps the hot path free of timers. It returns when stop is closed.
func (s *callStream) watch(stop <-chan struct{}) {
	tick := time.NewTicker(maxSendBlock / 2)
	defer tick.Stop()
	var last uint64
	streak := 0
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		cur := s.sending.Load()
		if cur == 0 || cur != last {
			last, streak = cur, 0
			continue
		}
		// The same send was in progress at three ticks in a row: it has
		// blocked for at least maxSendBlock.
		if streak++; streak >= 2 {
			s.fail(fmt.Errorf("a send blocked for %v: the plugin reads nothing", maxSendBlock))
			s.abort()
			return
		}
	}
}

// start opens a call with its first frame. An error wrapping ErrNotSent
// means that nothing reached the plugin; a call whose ctx ends while it
// waits for its turn to send returns ctx's cause.
func (s *callStream) start(ctx context.Context, first *proto.Call) (*pending, error) {
	if err := s.lock(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	defer s.unlock()
	s.mu.Lock()
	switch {
	case s.err != nil:
		err := s.err
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	case s.draining:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNotSent, errDraining)
	}
	s.nextID++
	p := &pending{id: s.nextID, stream: s, wake: make(chan struct{}, 1)}
	if cc, ok := ctx.(*callctx.Ctx); ok {
		p.deadline, _ = cc.Deadline()
	}
	s.calls[p.id] = p
	s.mu.Unlock()
	if !p.deadline.IsZero() {
		s.watchDeadline(p.deadline)
	}
	first.Id = p.id
	if err := s.sendLocked(first); err != nil {
		s.forget(p.id)
		if s.concurrent {
			// A concurrent conn refuses a frame whole, before queueing it.
			return nil, fmt.Errorf("%w: %w: send: %v", ErrNotSent, ErrUnavailable, err)
		}
		// The frame may or may not have reached the plugin: not ErrNotSent.
		return nil, fmt.Errorf("%w: send: %v", ErrUnavailable, err)
	}
	return p, nil
}

// send sends one frame, giving up when ctx is done before the stream's turn
// comes.
func (s *callStream) send(ctx context.Context, c *proto.Call) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	return s.sendLocked(c)
}

// forget drops a call; the last one to go closes a draining stream.
func (s *callStream) forget(id uint64) {
	s.mu.Lock()
	delete(s.calls, id)
	idle := s.idleLocked()
	s.mu.Unlock()
	if idle {
		s.closeSend()
	}
}

// watchDeadline makes sure the stream's deadline timer fires by d.
func (s *callStream) watchDeadline(d time.Time) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if !s.darmed.IsZero() && !d.Before(s.darmed) {
		return
	}
	s.darmed = d
	if s.dtimer == nil {
		s.dtimer = time.AfterFunc(time.Until(d), s.expire)
	} else {
		s.dtimer.Reset(time.Until(d))
	}
}

// expire fails the calls whose deadline has passed with
// context.DeadlineExceeded, and arms the timer for the next deadline. The
// calls stay in flight until their callers forget or cancel them.
func (s *callStream) expire() {
	s.dmu.Lock()
	s.darmed = time.Time{} // a call started from now on arms the timer itself
	s.dmu.Unlock()
	now := time.Now()
	var next time.Time
	var expired []*pending
	s.mu.Lock()
	for _, p := range s.calls {
		switch {
		case p.deadline.IsZero():
		case !now.Before(p.deadline):
			expired = append(expired, p)
		case next.IsZero() || p.deadline.Before(next):
			next = p.deadline
		}
	}
	s.mu.Unlock()
	for _, p := range expired {
		p.fail(context.DeadlineExceeded)
	}
	if !next.IsZero() {
		s.watchDeadline(next)
	}
}

// stopDeadlines stops the deadline timer of a stream that has ended.
func (s *callStream) stopDeadlines() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.dtimer != nil {
		s.dtimer.Stop()
	}
	s.darmed = time.Time{}
}

// live reports whether the call id is still in flight on the stream.
func (s *callStream) live(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.calls[id]
	return ok
}

// idleLocked reports whether a draining stream has no call left, so its
// send side can be closed.
func (s *callStream) idleLocked() bool {
	return s.draining && s.err == nil && len(s.calls) == 0
}

// drain refuses new calls and closes the send side once the calls in
// flight have ended. Until then their credit and cancellations still reach
// the plugin.
func (s *callStream) drain() {
	s.mu.Lock()
	s.draining = true
	idle := s.idleLocked()
	s.mu.Unlock()
	if idle {
		s.closeSend()
	}
}

// closeSend tells the plugin no more frames come on this stream; it ends the
// stream once the calls it runs have answered. It is idempotent, and waits
// for its turn at most as long as a stuck send can last.
func (s *callStream) closeSend() {
	if s.concurrent {
		_ = s.stream.CloseSend()
		return
	}
	if s.lock(context.Background()) != nil {
		return // the stream has ended
	}
	defer s.unlock()
	if !s.sent {
		s.sent = true
		_ = s.stream.CloseSend()
	}
}

// pending is a call in flight: the frames the plugin sent for it, queued
// until the caller takes them.
type pending struct {
	id       uint64
	stream   *callStream
	deadline time.Time // kept by the stream's timer; zero: the caller's context keeps it

	mu     sync.Mutex
	frames []*proto.Reply // guarded by mu
	queued int            // body bytes in frames; guarded by mu
	ended  bool           // the final frame is queued, or the call failed; guarded by mu
	err    error          // set when the call failed; guarded by mu
	wake   chan struct{}
}

// maxQueued bounds the answer bytes a call may have waiting for its caller.
// A plugin that honours its credit never has more than responseCredit
// outstanding; one that does not would make the kernel buffer without limit,
// so it fails the call instead.
const maxQueued = responseCredit + 64<<10

// bodyLen is how many bytes of body a frame carries.
func bodyLen(r *proto.Reply) int {
	switch f := r.GetFrame().(type) {
	case *proto.Reply_Http:
		return len(f.Http.GetBody())
	case *proto.Reply_Body:
		return len(f.Body.GetData())
	}
	return 0
}

func (p *pending) push(r *proto.Reply, final bool) {
	p.mu.Lock()
	if !p.ended {
		p.frames = append(p.frames, r)
		p.ended = final
		if p.queued += bodyLen(r); p.queued > maxQueued {
			p.frames, p.queued = nil, 0
			p.ended = true
			p.err = fmt.Errorf("%w: more than %d bytes of answer beyond its credit", ErrProtocol, maxQueued)
		}
	}
	p.mu.Unlock()
	p.signal()
}

func (p *pending) fail(err error) {
	p.mu.Lock()
	if !p.ended {
		p.ended = true
		p.err = err
	}
	p.mu.Unlock()
	p.signal()
}

func (p *pending) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// next returns the call's next frame, waiting for it until ctx ends.
func (p *pending) next(ctx context.Context) (*proto.Reply, error) {
	return p.nextOr(ctx, nil)
}

// nextOr is next that also stops waiting when gone is closed (the caller's
// client went away), with context.Canceled.
func (p *pending) nextOr(ctx context.Context, gone <-chan struct{}) (*proto.Reply, error) {
	for {
		p.mu.Lock()
		if len(p.frames) > 0 {
			r := p.frames[0]
			p.frames[0] = nil
			p.frames = p.frames[1:]
			p.queued -= bodyLen(r)
			p.mu.Unlock()
			return r, nil
		}
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return nil, err
		}
		p.mu.Unlock()
		// A deadline the stream keeps fails the call itself (expire),
		// and the context then reports it: its Done need not be waited
		// for, which would arm a timer for every call.
		var done <-chan struct{}
		if p.deadline.IsZero() {
			done = ctx.Done()
		}
		select {
		case <-p.wake:
		case <-done:
			return nil, context.Cause(ctx)
		case <-gone:
			return nil, context.Canceled
		}
	}
}

// cancel tells the plugin the caller gave up, and forgets the call. It does
// nothing for a call that has already ended.
func (p *pending) cancel(reason string) {
	if !p.stream.live(p.id) {
		return
	}
	// Send before forgetting: forgetting the last call closes a draining
	// stream, after which the plugin could not hear of the cancellation.
	ctx, cancel := context.WithTimeout(context.Background(), maxSendBlock)
	defer cancel()
	_ = p.stream.send(ctx, &proto.Call{Id: p.id, Frame: &proto.Call_Cancel{Cancel: &proto.Cancel{Reason: reason}}})
	p.stream.forget(p.id)
}

// credit lets the plugin send n more bytes of body. Credit for a call whose
// final frame has arrived is not needed, and may find a draining stream
// already closed for sending: that is no error. (A broken stream is reported
// by next.)
func (p *pending) credit(ctx context.Context, n int) error {
	err := p.stream.send(ctx, &proto.Call{Id: p.id, Frame: &proto.Call_Credit{Credit: &proto.Credit{Bytes: uint32(n)}}})
	if err != nil && !p.stream.live(p.id) {
		return nil
	}
	return err
}

// body sends more request body.
func (p *pending) body(ctx context.Context, b *proto.Body) error {
	return p.stream.send(ctx, &proto.Call{Id: p.id, Frame: &proto.Call_Body{Body: b}})
}
