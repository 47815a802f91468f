package kernel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/kernel/config"
	"github.com/switchyard-dev/switchyard/listeners/line"
	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// lineFront is a line listener's front end.
type lineFront struct{ *line.Server }

func (f lineFront) counters() frontStats {
	s := f.Stats()
	return frontStats{Connections: s.Connections, Accepted: s.Accepted, Requests: s.Requests, Errors: s.Errors}
}

// lineLimits are a line listener's limits as its configuration sets them.
func lineLimits(lc *config.Listener) line.Limits {
	return line.Limits{
		MaxLine:        lc.MaxLine,
		Telnet:         lc.Telnet,
		UTF8:           lc.UTF8Enabled(),
		IdleTimeout:    lc.IdleTimeout.D(),
		MaxOutput:      lc.MaxOutput,
		WriteTimeout:   lc.WriteTimeout.D(),
		MaxConnections: lc.MaxConnections,
	}
}

// DispatchLine implements listeners/line.Dispatcher.
func (rt *route) DispatchLine(ctx context.Context, c *line.Conn, ev line.Event) (line.Reply, error) {
	s := rt.slot.Load()
	defer rt.observe(s, lineCall(ev.Kind), time.Now())
	return s.serveLine(ctx, c, ev)
}

// lineKinds maps the front end's event kinds to the protocol's.
var lineKinds = map[line.Kind]proto.LineEvent_Kind{
	line.Open:    proto.LineEvent_OPEN,
	line.Line:    proto.LineEvent_LINE,
	line.TooLong: proto.LineEvent_TOO_LONG,
	line.Block:   proto.LineEvent_BLOCK,
	line.Close:   proto.LineEvent_CLOSE,
}

// serveLine delivers one event of a line session to the slot's current
// instance. The session's state lives in c: whichever process answers, it
// gets the state the last answer left. When no answer can be had, the
// reply carries the plugin's failure line (SMTP's 451) for the client.
func (s *slot) serveLine(ctx context.Context, c *line.Conn, ev line.Event) (line.Reply, error) {
	cfg, _ := s.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout.D())
	defer cancel()
	se := host.SessionEvent{
		Kind:     lineKinds[ev.Kind],
		ConnID:   c.ID,
		Listener: c.Listener,
		Since:    c.Since,
		Data:     ev.Data,
		Overflow: ev.Overflow,
		Size:     ev.Size,
		Reason:   ev.Reason,
	}
	if c.Remote != nil {
		se.RemoteAddr = c.Remote.String()
	}
	if c.Local != nil {
		se.LocalAddr = c.Local.String()
	}
	var r *proto.LineReply
	err := s.withInstance(ctx, nil, func(in *instance) (bool, error) {
		var err error
		r, err = in.proc.ServeSession(ctx, in.token, in.version, lineSession{c}, se)
		return false, err
	})
	if err != nil {
		s.errs.Add(1)
		s.callLog.Warn("line event failed", "listener", c.Listener, "conn", c.ID, "event", ev.Kind.String(),
			"error", err, "call_timeout", cfg.CallTimeout.D())
		var reply line.Reply
		s.mu.Lock()
		fail := s.failReply
		s.mu.Unlock()
		if fail != "" && ev.Kind != line.Close {
			reply.Lines = [][]byte{[]byte(fail)}
		}
		return reply, err
	}
	s.served.Add(1)
	reply := line.Reply{Lines: r.GetLines(), Close: r.GetClose()}
	if k := r.GetCollect(); k != nil {
		if k.GetTerminator() == "" {
			s.log.Warn("plugin asked to collect a block without a terminator; ignored", "listener", c.Listener, "conn", c.ID)
		} else {
			reply.Collect = &line.Collect{Terminator: k.GetTerminator(), DotUnstuff: k.GetDotUnstuff(), MaxBytes: k.GetMaxBytes()}
		}
	}
	return reply, nil
}

// lineSession lets host.ServeSession keep a connection's session state.
type lineSession struct{ c *line.Conn }

var _ host.Session = lineSession{}

func (s lineSession) Session() (map[string]string, string) { return s.c.Session() }
func (s lineSession) UpdateSession(set map[string]string, del []string, version string) {
	s.c.UpdateSession(set, del, version)
}
func (s lineSession) Mark() (uint64, uint64)     { return s.c.Holder, s.c.Seq }
func (s lineSession) SetMark(holder, seq uint64) { s.c.Holder, s.c.Seq = holder, seq }

// slotConns are the line connections one slot's plugin may reach: those of
// the listeners routed to it.
type slotConns struct {
	k    *Kernel
	slot *slot
}

var _ host.Conns = slotConns{}

// fronts returns the line front ends routed to the slot, by listener name.
func (sc slotConns) fronts() map[string]lineFront {
	sc.k.mu.Lock()
	defer sc.k.mu.Unlock()
	out := make(map[string]lineFront)
	for name, l := range sc.k.listeners {
		if lf, ok := l.srv.(lineFront); ok && l.route.slot.Load() == sc.slot {
			out[name] = lf
		}
	}
	return out
}

func (sc slotConns) lookup(id uint64) (*line.Conn, error) {
	for _, f := range sc.fronts() {
		if c := f.Lookup(id); c != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %d is not a live connection of plugin %s", host.ErrNoConn, id, sc.slot.name)
}

func (sc slotConns) Send(_ context.Context, id uint64, data []byte) error {
	c, err := sc.lookup(id)
	if err != nil {
		return err
	}
	switch err := c.Send(data); {
	case errors.Is(err, line.ErrOutputFull):
		return fmt.Errorf("%w: %w", host.ErrConnFull, err)
	case errors.Is(err, line.ErrClosed):
		return fmt.Errorf("%w: %w", host.ErrNoConn, err)
	default:
		return err
	}
}

func (sc slotConns) Close(_ context.Context, id uint64) error {
	c, err := sc.lookup(id)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

func (sc slotConns) List(_ context.Context, listener string) ([]*proto.Conn, error) {
	var out []*proto.Conn
	for name, f := range sc.fronts() {
		if listener != "" && name != listener {
			continue
		}
		for _, c := range f.Conns() {
			st, _ := c.Session()
			pc := &proto.Conn{Id: c.ID, Listener: c.Listener, SinceUnixNano: c.Since.UnixNano(), State: make(map[string][]byte, len(st))}
			if c.Remote != nil {
				pc.RemoteAddr = c.Remote.String()
			}
			for k, v := range st {
				pc.State[k] = []byte(v)
			}
			out = append(out, pc)
		}
	}
	slices.SortFunc(out, func(a, b *proto.Conn) int { return cmp.Compare(a.GetId(), b.GetId()) })
	return out, nil
}

// ConnInfo is one row of `ctl conns`.
type ConnInfo struct {
	ID       uint64 `json:"id"`
	Listener string `json:"listener"`
	Remote   string `json:"remote"`
	Since    string `json:"since"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
}

// Conns lists the live line connections, of listener only unless it is "".
func (k *Kernel) Conns(listener string) ([]ConnInfo, error) {
	k.mu.Lock()
	ls := maps.Clone(k.listeners)
	k.mu.Unlock()
	if l, ok := ls[listener]; listener != "" && !ok {
		return nil, fmt.Errorf("no listener %q (have %s)", listener, strings.Join(slices.Sorted(maps.Keys(ls)), ", "))
	} else if ok {
		if _, isLine := l.srv.(lineFront); !isLine {
			return nil, fmt.Errorf("listener %q is %s, not a line listener", listener, l.cfg.Load().Protocol)
		}
	}
	out := []ConnInfo{}
	for name, l := range ls {
		lf, ok := l.srv.(lineFront)
		if !ok || listener != "" && name != listener {
			continue
		}
		for _, c := range lf.Conns() {
			ci := ConnInfo{ID: c.ID, Listener: c.Listener, Since: c.Since.UTC().Format(time.RFC3339), BytesIn: c.BytesIn(), BytesOut: c.BytesOut()}
			if c.Remote != nil {
				ci.Remote = c.Remote.String()
			}
			out = append(out, ci)
		}
	}
	slices.SortFunc(out, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}
