package sdktest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Session is a line connection to a plugin in memory: events go to the
// plugin's LineHandler as the kernel would send them (the whole state the
// first time a plugin meets the session, changes after that), and the
// session keeps the state the replies leave, as the kernel does. A Session
// is for one goroutine, like a connection's events in the kernel.
//
//	s, greeting := p.Dial()
//	reply := s.Send("HELO client.test")
type Session struct {
	p      *Plugin // the plugin events go to; MoveTo changes it
	id     uint64
	since  time.Time
	remote string

	// Guarded by mu: the plugin's Host.Send, CloseConn and Conns reach
	// them from its goroutines.
	mu      sync.Mutex
	state   map[string]string
	version string
	holder  uint64
	seq     uint64
	sent    bytes.Buffer // what the plugin sent with Host.Send
	closing bool         // the plugin asked to close
	ended   bool         // the Close event has been sent

	collect *proto.LineCollect // lines are being collected into a block
	block   bytes.Buffer
	size    int64
	over    bool
}

var _ host.Session = (*Session)(nil)

// Dial opens a session: the plugin's Open runs, and its reply lines (the
// greeting) come back. It fails the test if the event fails.
func (p *Plugin) Dial() (*Session, []string) {
	p.t.Helper()
	s := &Session{p: p, id: p.conns.nextID(), since: time.Now(), remote: "192.0.2.1:49152"}
	p.conns.add(s)
	return s, s.must(s.event(host.SessionEvent{Kind: proto.LineEvent_OPEN}))
}

// ID is the connection id the plugin sees.
func (s *Session) ID() uint64 { return s.id }

// Send delivers one line of input and returns the reply lines. While the
// plugin collects a block (Conn.Collect), lines are gathered as the kernel
// gathers them and Send returns nil, until the terminator line delivers
// the block and returns the reply to it.
func (s *Session) Send(line string) []string {
	s.p.t.Helper()
	return s.must(s.TrySend(line))
}

// TrySend is Send returning the event's error instead of failing the test:
// for a handler that panics, or a Migrate that refuses.
func (s *Session) TrySend(line string) ([]string, error) {
	if c := s.collect; c != nil {
		if line != c.GetTerminator() {
			s.size += int64(len(line)) + 2
			if c.GetDotUnstuff() && strings.HasPrefix(line, ".") {
				line = line[1:]
			}
			limit := c.GetMaxBytes()
			if limit <= 0 {
				limit = 16 << 20
			}
			if s.over || int64(s.block.Len()+len(line)+2) > limit {
				s.over = true
				s.block.Reset()
			} else {
				s.block.WriteString(line)
				s.block.WriteString("\r\n")
			}
			return nil, nil
		}
		data := bytes.Clone(s.block.Bytes())
		ev := host.SessionEvent{Kind: proto.LineEvent_BLOCK, Data: data, Overflow: s.over, Size: s.size}
		if s.over {
			ev.Data = nil
		}
		s.collect, s.over, s.size = nil, false, 0
		s.block.Reset()
		return s.event(ev)
	}
	return s.event(host.SessionEvent{Kind: proto.LineEvent_LINE, Data: []byte(line)})
}

// SendTooLong delivers the event the kernel sends for a line longer than
// the listener's max_line, with prefix as its first bytes.
func (s *Session) SendTooLong(prefix string) []string {
	s.p.t.Helper()
	return s.must(s.event(host.SessionEvent{Kind: proto.LineEvent_TOO_LONG, Data: []byte(prefix)}))
}

// Close ends the session as a client that hangs up does (reason "client
// closed") and returns the reply lines of the plugin's Close.
func (s *Session) Close() []string {
	s.p.t.Helper()
	return s.CloseFor("client closed")
}

// CloseFor ends the session with the given reason.
func (s *Session) CloseFor(reason string) []string {
	s.p.t.Helper()
	s.mu.Lock()
	ended := s.ended
	s.ended = true
	s.mu.Unlock()
	if ended {
		s.p.t.Fatalf("sdktest: session %d closed twice", s.id)
	}
	lines, err := s.event(host.SessionEvent{Kind: proto.LineEvent_CLOSE, Reason: reason})
	s.p.conns.remove(s.id)
	return s.must(lines, err)
}

// Closing reports whether the plugin asked to end the session (a reply's
// Close, or Host.CloseConn).
func (s *Session) Closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Collecting reports whether the plugin is collecting a block.
func (s *Session) Collecting() bool { return s.collect != nil }

// State returns a copy of the session's state as the kernel would hold it.
func (s *Session) State() map[string]string {
	st, _ := s.Session()
	return st
}

// Sent returns and forgets what the plugin sent to this connection with
// Host.Send.
func (s *Session) Sent() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent.String()
	s.sent.Reset()
	return out
}

// MoveTo sends the session's next events to p, as a swap to a new version
// of the plugin does: p meets the session with its whole state (and
// migrates it, if it has a Migrate and another version wrote it).
func (s *Session) MoveTo(p *Plugin) {
	s.p.conns.remove(s.id)
	s.p = p
	p.conns.add(s)
}

func (s *Session) must(lines []string, err error) []string {
	s.p.t.Helper()
	if err != nil {
		s.p.t.Fatalf("sdktest: %v", err)
	}
	return lines
}

// event delivers one event and returns the reply lines.
func (s *Session) event(e host.SessionEvent) ([]string, error) {
	e.ConnID, e.Listener, e.RemoteAddr, e.LocalAddr, e.Since = s.id, s.p.listener, s.remote, "sdktest", s.since
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.p.client.ServeSession(ctx, s.p.token, s.p.Describe.GetVersion(), s, e)
	if err != nil {
		return nil, fmt.Errorf("%s event on session %d: %w", strings.ToLower(e.Kind.String()), s.id, err)
	}
	if r.GetClose() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
	}
	if c := r.GetCollect(); c != nil {
		if c.GetTerminator() == "" {
			return nil, fmt.Errorf("session %d: Collect with an empty terminator", s.id)
		}
		s.collect = c
	}
	lines := make([]string, len(r.GetLines()))
	for i, l := range r.GetLines() {
		lines[i] = string(l)
	}
	return lines, nil
}

// Session, UpdateSession, Mark and SetMark implement host.Session.
func (s *Session) Session() (map[string]string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := maps.Clone(s.state)
	if st == nil {
		st = map[string]string{}
	}
	return st, s.version
}

func (s *Session) UpdateSession(set map[string]string, del []string, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == nil {
		s.state = make(map[string]string)
	}
	maps.Copy(s.state, set)
	for _, k := range del {
		delete(s.state, k)
	}
	s.version = version
}

func (s *Session) Mark() (uint64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holder, s.seq
}

func (s *Session) SetMark(holder, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holder, s.seq = holder, seq
}

// Tick runs one tick of the timer name in the plugin, as the kernel's
// scheduler would (count numbers it, from 1).
func (p *Plugin) Tick(name string, count uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.client.Tick(ctx, &proto.Tick{Name: name, ScheduledUnixNano: time.Now().UnixNano(), Count: count})
}

// connTable is the line connections the plugins of a test reach with
// Host.Send, CloseConn and Conns.
type connTable struct {
	mu       sync.Mutex
	sessions map[uint64]*Session // guarded by mu
	next     uint64              // guarded by mu
	tokens   uint64              // guarded by mu
}

var _ host.Conns = (*connTable)(nil)

func newConnTable() *connTable {
	// Ids start at a random offset, so sessions of different plugins in
	// one test (MoveTo) do not share ids.
	return &connTable{sessions: make(map[uint64]*Session), next: rand.Uint64N(1<<40) << 16, tokens: rand.Uint64N(1<<40) << 16}
}

func (t *connTable) nextID() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	return t.next
}

func (t *connTable) token() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tokens++
	return t.tokens
}

func (t *connTable) add(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sessions[s.id] = s
}

func (t *connTable) remove(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sessions, id)
}

func (t *connTable) get(id uint64) (*Session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.sessions[id]
	if s == nil {
		return nil, fmt.Errorf("%w: %d", host.ErrNoConn, id)
	}
	return s, nil
}

func (t *connTable) Send(_ context.Context, id uint64, data []byte) error {
	s, err := t.get(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.ended {
		return fmt.Errorf("%w: %d is closing", host.ErrNoConn, id)
	}
	s.sent.Write(data)
	return nil
}

func (t *connTable) Close(_ context.Context, id uint64) error {
	s, err := t.get(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	return nil
}

func (t *connTable) List(_ context.Context, listener string) ([]*proto.Conn, error) {
	t.mu.Lock()
	ss := slices.Collect(maps.Values(t.sessions))
	t.mu.Unlock()
	slices.SortFunc(ss, func(a, b *Session) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	var out []*proto.Conn
	for _, s := range ss {
		if listener != "" && s.p.listener != listener {
			continue
		}
		st, _ := s.Session()
		c := &proto.Conn{Id: s.id, Listener: s.p.listener, RemoteAddr: s.remote, SinceUnixNano: s.since.UnixNano(), State: make(map[string][]byte, len(st))}
		for k, v := range st {
			c.State[k] = []byte(v)
		}
		out = append(out, c)
	}
	return out, nil
}
