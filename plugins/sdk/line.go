package sdk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// LineHandler answers the connections of line listeners (SMTP, chat, any
// protocol of lines). The kernel owns each connection and its session
// state; a handler sees one event at a time per connection, in order: Open
// first, then Line for each line, Close last. Calls for different
// connections run concurrently.
//
// Each call gets a Conn whose State the handler reads and changes; the
// kernel keeps the changes, so the next event sees them even when it is
// answered by a new version of the plugin after a swap, or by a restarted
// process after a crash. A handler answers with c.Reply, and may end the
// session with c.Close or collect a block of lines with c.Collect.
type LineHandler interface {
	// Open is called when a client connects, before any input: the
	// greeting goes in c.Reply.
	Open(c *Conn)
	// Line is called with each line of input, without its line ending.
	// With the listener's utf8 setting (the default) it is valid UTF-8.
	Line(c *Conn, line string)
	// Close is called once when the session ends (c.Reason says why);
	// replies are written if the client still reads.
	Close(c *Conn)
}

// BlockHandler is implemented by a LineHandler that calls Conn.Collect: it
// receives the collected lines as one block.
type BlockHandler interface {
	Block(c *Conn, b Block)
}

// TooLongHandler is implemented by a LineHandler that answers lines longer
// than the listener's max_line. Without it such lines are dropped silently.
type TooLongHandler interface {
	// TooLong gets the first max_line bytes of the line; the rest of the
	// line is discarded and the next line arrives as usual.
	TooLong(c *Conn, prefix string)
}

// Block is what a Collect gathered.
type Block struct {
	// Data holds the lines, each ending in CR LF, dot-unstuffed when asked,
	// as bytes: a message body has its own charset.
	Data []byte
	// Overflow is set when the block grew past Collect.MaxBytes: its lines
	// were discarded and Data is empty.
	Overflow bool
	// Size is the block's length as it arrived, discarded bytes included.
	Size int64
}

// Collect asks for the lines after the current one, up to a terminator
// line, as one Block: a large message costs one call, not one per line.
type Collect struct {
	// Terminator is the line that ends the block (SMTP: ".").
	Terminator string
	// DotUnstuff removes the first '.' of each line that begins with one
	// (RFC 5321 section 4.5.2).
	DotUnstuff bool
	// MaxBytes bounds the block; 0 means the kernel's default (16 MiB).
	MaxBytes int64
}

// Conn is a line connection as one event sees it. It is valid only during
// the handler call it was passed to.
type Conn struct {
	// ID names the connection kernel-wide; Host.Send and Host.CloseConn
	// take it.
	ID       uint64
	Listener string
	Remote   string // the client's address, "ip:port" for TCP
	Local    string
	Since    time.Time
	// State is the session's state. Set, change and delete keys (valid
	// UTF-8) as the session goes on; the kernel keeps the changes.
	State map[string]string
	// Reason says why a session ends, in Close: "client closed", "idle
	// timeout", "closed by handler", "shutdown", "output overflow", "write
	// failed" or "read failed".
	Reason string

	ctx     context.Context
	lines   [][]byte
	close   bool
	collect *proto.LineCollect
}

// Context is the event's context: it carries the kernel's deadline
// (call_timeout) and the plugin's Host (HostFrom).
func (c *Conn) Context() context.Context { return c.ctx }

// Host is the plugin's way back into the kernel.
func (c *Conn) Host() *Host { return HostFrom(c.ctx) }

// Reply queues a line to send to the client; the kernel ends it with CR LF.
func (c *Conn) Reply(line string) { c.lines = append(c.lines, []byte(line)) }

// Replyf queues a formatted line.
func (c *Conn) Replyf(format string, args ...any) { c.Reply(fmt.Sprintf(format, args...)) }

// Close ends the session once the replies are written; Close is then
// called with Reason "closed by handler".
func (c *Conn) Close() { c.close = true }

// Collect makes the kernel gather the following lines into one Block
// delivered to the handler's Block method (see BlockHandler).
func (c *Conn) Collect(k Collect) {
	c.collect = &proto.LineCollect{Terminator: k.Terminator, DotUnstuff: k.DotUnstuff, MaxBytes: k.MaxBytes}
}

// sessions caches, per connection, the state this process last answered
// with: the kernel then sends only the events, not the whole state, and
// the replies carry only the keys that changed. Events of one connection
// may arrive on any Calls stream, so the cache is the process's.
type sessions struct {
	mu sync.Mutex
	m  map[uint64]*session // guarded by mu
}

type session struct {
	state map[string]string // never changed once cached
	seq   uint64            // the event whose reply produced state
}

// get returns the cached state for the event after base, if the cache has
// it.
func (ss *sessions) get(id, base uint64) (map[string]string, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e := ss.m[id]
	if e == nil || e.seq != base {
		return nil, false
	}
	return e.state, true
}

// put caches the state event seq left, unless a later event's is there:
// a handler the kernel gave up on may finish after its successor.
func (ss *sessions) put(id, seq uint64, state map[string]string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = make(map[uint64]*session)
	}
	if e := ss.m[id]; e == nil || e.seq < seq {
		ss.m[id] = &session{state: state, seq: seq}
	}
}

func (ss *sessions) drop(id uint64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

func (s *callStream) startLine(id uint64, timeoutNS int64, ev *proto.LineEvent) {
	h := s.svc.plugin.Line
	if h == nil {
		_ = s.send(failure(id, "plugin serves no line protocol"))
		return
	}
	s.startSingle(id, timeoutNS, func(c *call) (*proto.Reply, error) {
		r, err := s.svc.serveLine(c.ctx, h, ev)
		if err != nil {
			return nil, err
		}
		return &proto.Reply{Frame: &proto.Reply_Line{Line: r}}, nil
	})
}

// serveLine runs one event through h and returns the reply with the
// state's changes.
func (s *service) serveLine(ctx context.Context, h LineHandler, ev *proto.LineEvent) (*proto.LineReply, error) {
	var base map[string]string
	if ev.GetFullState() {
		base = make(map[string]string, len(ev.GetState()))
		for k, v := range ev.GetState() {
			base[k] = string(v)
		}
	} else {
		var ok bool
		if base, ok = s.sessions.get(ev.GetConnId(), ev.GetBaseSeq()); !ok {
			return &proto.LineReply{NeedState: true}, nil
		}
	}
	state := maps.Clone(base)
	if state == nil {
		state = make(map[string]string)
	}
	if from := ev.GetStateVersion(); ev.GetFullState() && from != "" && from != s.plugin.Version && s.plugin.Migrate != nil {
		migrated, err := s.migrate(ctx, from, state)
		if err != nil {
			return nil, err
		}
		state = migrated
	}
	c := &Conn{
		ID:       ev.GetConnId(),
		Listener: ev.GetListener(),
		Remote:   ev.GetRemoteAddr(),
		Local:    ev.GetLocalAddr(),
		Since:    time.Unix(0, ev.GetSinceUnixNano()),
		State:    state,
		Reason:   ev.GetReason(),
		ctx:      ctx,
	}
	if err := s.lineEvent(h, c, ev); err != nil {
		return nil, err
	}
	if c.State == nil {
		c.State = map[string]string{}
	}
	r := &proto.LineReply{Lines: c.lines, Close: c.close, Collect: c.collect}
	for k, v := range c.State {
		if old, ok := base[k]; !ok || old != v {
			if r.Set == nil {
				r.Set = make(map[string][]byte)
			}
			r.Set[k] = []byte(v)
		}
	}
	for k := range base {
		if _, ok := c.State[k]; !ok {
			r.Deleted = append(r.Deleted, k)
		}
	}
	if ev.GetKind() == proto.LineEvent_CLOSE {
		s.sessions.drop(c.ID)
	} else {
		// The handler may keep the map it was given; the cache keeps its
		// own.
		s.sessions.put(c.ID, ev.GetSeq(), maps.Clone(c.State))
	}
	return r, nil
}

// lineEvent calls the handler for ev, turning a panic into an error.
func (s *service) lineEvent(h LineHandler, c *Conn, ev *proto.LineEvent) (err error) {
	kind := ev.GetKind()
	defer func() {
		if p := recover(); p != nil {
			s.logPanic(fmt.Sprintf("line %s conn %d", kind, c.ID), p, debug.Stack())
			err = errors.New("handler panicked")
		}
	}()
	switch kind {
	case proto.LineEvent_OPEN:
		h.Open(c)
	case proto.LineEvent_LINE:
		h.Line(c, string(ev.GetData()))
	case proto.LineEvent_TOO_LONG:
		if th, ok := h.(TooLongHandler); ok {
			th.TooLong(c, string(ev.GetData()))
		}
	case proto.LineEvent_BLOCK:
		bh, ok := h.(BlockHandler)
		if !ok {
			return errors.New("the line handler asked to Collect a block but has no Block method")
		}
		bh.Block(c, Block{Data: ev.GetData(), Overflow: ev.GetOverflow(), Size: ev.GetSize()})
	case proto.LineEvent_CLOSE:
		h.Close(c)
	default:
		return fmt.Errorf("unknown line event kind %v", kind)
	}
	return nil
}

// migrate runs the plugin's Migrate, turning a panic into an error.
func (s *service) migrate(ctx context.Context, from string, state map[string]string) (out map[string]string, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logPanic("migrate from "+from, p, debug.Stack())
			out, err = nil, errors.New("migrate panicked")
		}
	}()
	out, err = s.plugin.Migrate(ctx, from, state)
	if err != nil {
		return nil, fmt.Errorf("migrate session state from version %s: %w", from, err)
	}
	if out == nil {
		out = make(map[string]string)
	}
	return out, nil
}
