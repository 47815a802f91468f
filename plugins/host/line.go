package host

import (
	"context"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Session is a line connection's session as the kernel holds it: the
// authoritative state, and a mark that records which plugin process holds
// a copy of it. ServeSession is its only writer; calls for one Session must
// not overlap.
type Session interface {
	// Session returns a copy of the state and the version of the plugin
	// that wrote it last.
	Session() (state map[string]string, version string)
	// UpdateSession applies a reply's changes.
	UpdateSession(set map[string]string, del []string, version string)
	// Mark returns what SetMark stored: the token of the process holding
	// a copy of the state (0: none), and the sequence number of the last
	// event sent.
	Mark() (holder, seq uint64)
	SetMark(holder, seq uint64)
}

// SessionEvent is one event of a session, as ServeSession sends it.
type SessionEvent struct {
	Kind       proto.LineEvent_Kind
	ConnID     uint64
	Listener   string
	RemoteAddr string
	LocalAddr  string
	Since      time.Time
	Data       []byte
	Overflow   bool
	Size       int64
	Reason     string
}

// ServeSession delivers one event of s to the plugin and applies the state
// changes of its reply to s. token names this process among all the
// processes a session may meet (the kernel numbers them); version is the
// plugin's, recorded as the state's writer. The whole state travels when
// the process has not seen the session yet or the previous event did not
// complete, and again when the plugin asks for it; otherwise the plugin
// works on its cached copy. Errors are those of ServeDNS; after one the
// next event carries the whole state.
func (c *Client) ServeSession(ctx context.Context, token uint64, version string, s Session, e SessionEvent) (*proto.LineReply, error) {
	holder, seq := s.Mark()
	full := holder != token || token == 0
	for {
		ev := &proto.LineEvent{
			Kind:          e.Kind,
			ConnId:        e.ConnID,
			Listener:      e.Listener,
			RemoteAddr:    e.RemoteAddr,
			LocalAddr:     e.LocalAddr,
			Data:          e.Data,
			Overflow:      e.Overflow,
			Size:          e.Size,
			Reason:        e.Reason,
			SinceUnixNano: e.Since.UnixNano(),
			Seq:           seq + 1,
		}
		if full {
			state, ver := s.Session()
			ev.FullState = true
			ev.StateVersion = ver
			ev.State = make(map[string][]byte, len(state))
			for k, v := range state {
				ev.State[k] = []byte(v)
			}
		} else {
			ev.BaseSeq = seq
		}
		seq = ev.Seq
		// Until its reply is applied, no process holds the state.
		s.SetMark(0, seq)
		r, err := c.ServeLine(ctx, ev)
		if err != nil {
			return nil, err
		}
		if r.GetNeedState() {
			if full {
				return nil, fmt.Errorf("%w: asked for the state it was sent", ErrProtocol)
			}
			full = true
			continue
		}
		var set map[string]string
		if len(r.GetSet()) > 0 {
			set = make(map[string]string, len(r.GetSet()))
			for k, v := range r.GetSet() {
				set[k] = string(v)
			}
		}
		s.UpdateSession(set, r.GetDeleted(), version)
		s.SetMark(token, seq)
		return r, nil
	}
}
