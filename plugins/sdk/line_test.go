package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// counter is a line handler that numbers each connection's lines in its
// session state, collects blocks after "DATA", and broadcasts "all TEXT"
// to the other connections.
type counter struct {
	version string
	opens   int // Open calls this process saw
}

func (h *counter) Open(c *sdk.Conn) {
	h.opens++
	c.State["n"] = "0"
	c.Replyf("hello from %s, conn %d", h.version, c.ID)
}

func (h *counter) Line(c *sdk.Conn, line string) {
	n, _ := strconv.Atoi(c.State["n"])
	n++
	c.State["n"] = strconv.Itoa(n)
	switch {
	case line == "DATA":
		c.Collect(sdk.Collect{Terminator: ".", DotUnstuff: true, MaxBytes: 64})
		c.Reply("go ahead")
	case line == "quit":
		c.Reply("bye")
		c.Close()
	case line == "forget":
		delete(c.State, "mark")
	case line == "panic":
		panic("asked to")
	case strings.HasPrefix(line, "mark "):
		c.State["mark"] = strings.TrimPrefix(line, "mark ")
	case strings.HasPrefix(line, "all "):
		conns, err := c.Host().Conns(c.Context(), "")
		if err != nil {
			c.Replyf("conns: %v", err)
			return
		}
		for _, o := range conns {
			if o.ID != c.ID {
				if err := c.Host().Send(c.Context(), o.ID, []byte(strings.TrimPrefix(line, "all ")+"\r\n")); err != nil {
					c.Replyf("send: %v", err)
				}
			}
		}
	}
	c.Replyf("#%d %s %s", n, h.version, line)
}

func (h *counter) Block(c *sdk.Conn, b sdk.Block) {
	if b.Overflow {
		c.Replyf("too big: %d bytes", b.Size)
		return
	}
	c.Replyf("block %q", b.Data)
}

func (h *counter) TooLong(c *sdk.Conn, prefix string) { c.Replyf("too long: %s...", prefix) }

func (h *counter) Close(c *sdk.Conn) { c.Replyf("closing: %s", c.Reason) }

func counterPlugin(h *counter) sdk.Plugin {
	return sdk.Plugin{Name: "counter", Version: h.version, Line: h}
}

func TestLineSession(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := sdktest.New(t, counterPlugin(&counter{version: "v1"}), nil)
	if got := p.Describe.GetProtocols(); !reflect.DeepEqual(got, []string{"line"}) {
		t.Fatalf("protocols = %v, want [line]", got)
	}
	s, greeting := p.Dial()
	if want := []string{fmt.Sprintf("hello from v1, conn %d", s.ID())}; !reflect.DeepEqual(greeting, want) {
		t.Fatalf("greeting = %q, want %q", greeting, want)
	}
	steps := []struct {
		send  string
		want  []string
		state map[string]string
	}{
		{"a", []string{"#1 v1 a"}, map[string]string{"n": "1"}},
		{"mark x y", []string{"#2 v1 mark x y"}, map[string]string{"n": "2", "mark": "x y"}},
		{"b", []string{"#3 v1 b"}, map[string]string{"n": "3", "mark": "x y"}},
		{"forget", []string{"#4 v1 forget"}, map[string]string{"n": "4"}},
		{"DATA", []string{"go ahead", "#5 v1 DATA"}, map[string]string{"n": "5"}},
		{"line one", nil, nil},
		{"..dotted", nil, nil},
		{".", []string{`block "line one\r\n.dotted\r\n"`}, map[string]string{"n": "5"}},
		{"DATA", []string{"go ahead", "#6 v1 DATA"}, nil},
		{strings.Repeat("x", 70), nil, nil},
		{".", []string{"too big: 72 bytes"}, nil},
	}
	for _, st := range steps {
		got := s.Send(st.send)
		if !reflect.DeepEqual(got, st.want) {
			t.Fatalf("send %q: reply %q, want %q", st.send, got, st.want)
		}
		if st.state != nil && !reflect.DeepEqual(s.State(), st.state) {
			t.Fatalf("send %q: state %v, want %v", st.send, s.State(), st.state)
		}
	}
	if got := s.SendTooLong("abc"); !reflect.DeepEqual(got, []string{"too long: abc..."}) {
		t.Fatalf("too long: %q", got)
	}
	if got := s.Send("quit"); !reflect.DeepEqual(got, []string{"bye", "#7 v1 quit"}) || !s.Closing() {
		t.Fatalf("quit: %q, closing %v", got, s.Closing())
	}
	if got := s.CloseFor("closed by handler"); !reflect.DeepEqual(got, []string{"closing: closed by handler"}) {
		t.Fatalf("close: %q", got)
	}
}

// TestLineStateResent: a plugin asked to work on a copy of the state it
// does not have (the kernel's record of what it holds is stale) asks for
// the state, and the event goes through with it.
func TestLineStateResent(t *testing.T) {
	p := sdktest.New(t, counterPlugin(&counter{version: "v1"}), nil)
	s, _ := p.Dial()
	s.Send("a")
	holder, seq := s.Mark()
	s.SetMark(holder, seq+5) // the plugin's copy is for an older event
	if got := s.Send("b"); !reflect.DeepEqual(got, []string{"#2 v1 b"}) {
		t.Fatalf("reply %q, want #2", got)
	}
	if got := s.Send("c"); !reflect.DeepEqual(got, []string{"#3 v1 c"}) {
		t.Fatalf("reply %q, want #3", got)
	}
}

// TestLineSwapAndMigrate: a session moves to a new version, which meets it
// with the state the old one left and migrates it once.
func TestLineSwapAndMigrate(t *testing.T) {
	v1 := sdktest.New(t, counterPlugin(&counter{version: "v1"}), nil)
	var migrations []string
	h2 := &counter{version: "v2"}
	p2 := counterPlugin(h2)
	p2.Migrate = func(ctx context.Context, from string, st map[string]string) (map[string]string, error) {
		migrations = append(migrations, from+":"+st["n"])
		if st["mark"] == "refuse" {
			return nil, errors.New("cannot migrate a refused mark")
		}
		st["migrated"] = from
		return st, nil
	}
	v2 := sdktest.New(t, p2, nil)

	s, _ := v1.Dial()
	s.Send("a")
	s.Send("b")
	s.MoveTo(v2)
	if got := s.Send("c"); !reflect.DeepEqual(got, []string{"#3 v2 c"}) {
		t.Fatalf("after the move: %q, want #3 from v2", got)
	}
	if got := s.Send("d"); !reflect.DeepEqual(got, []string{"#4 v2 d"}) {
		t.Fatalf("second line on v2: %q", got)
	}
	if want := []string{"v1:2"}; !reflect.DeepEqual(migrations, want) {
		t.Fatalf("migrations %v, want %v (once, with the state v1 left)", migrations, want)
	}
	if st := s.State(); st["migrated"] != "v1" || st["n"] != "4" {
		t.Fatalf("state %v: the migration's keys were not kept", st)
	}
	if h2.opens != 0 {
		t.Fatalf("v2 saw %d opens; the session was opened on v1", h2.opens)
	}

	// A Migrate that refuses fails the event, and the next one tries again.
	r, _ := v1.Dial()
	r.Send("mark refuse")
	r.MoveTo(v2)
	if _, err := r.TrySend("x"); err == nil || !strings.Contains(err.Error(), "cannot migrate") {
		t.Fatalf("event after a refused migration: %v", err)
	}
	if _, err := r.TrySend("y"); err == nil {
		t.Fatal("the second event was not migrated again")
	}
}

func TestLineBroadcast(t *testing.T) {
	p := sdktest.New(t, counterPlugin(&counter{version: "v1"}), nil)
	a, _ := p.Dial()
	b, _ := p.Dial()
	c, _ := p.Dial()
	a.Send("all one")
	a.Send("all two")
	if got := a.Sent(); got != "" {
		t.Fatalf("the sender got its own broadcast %q", got)
	}
	for _, s := range []*sdktest.Session{b, c} {
		if got := s.Sent(); got != "one\r\ntwo\r\n" {
			t.Fatalf("session %d got %q", s.ID(), got)
		}
	}
	c.Close()
	a.Send("all three")
	if got := b.Sent(); got != "three\r\n" {
		t.Fatalf("after c left: %q", got)
	}
}

func TestLinePanic(t *testing.T) {
	log := &testutil.LogRecorder{}
	p, err := sdktest.Start(t, counterPlugin(&counter{version: "v1"}), nil, sdktest.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Dial()
	s.Send("a")
	if _, err := s.TrySend("panic"); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panic: %v", err)
	}
	// The state the panicking event would have changed is as it was.
	if got := s.Send("b"); !reflect.DeepEqual(got, []string{"#2 v1 b"}) {
		t.Fatalf("after the panic: %q", got)
	}
	if len(log.Find("handler panicked")) == 0 {
		t.Fatal("no log record of the panic")
	}
}

func TestTick(t *testing.T) {
	var got []sdk.Tick
	p := sdktest.New(t, sdk.Plugin{Name: "ticker", Tick: func(ctx context.Context, tk sdk.Tick) error {
		got = append(got, tk)
		if tk.Count == 3 {
			return errors.New("third tick fails")
		}
		return nil
	}}, nil)
	if !reflect.DeepEqual(p.Describe.GetProtocols(), []string{"timer"}) {
		t.Fatalf("protocols %v", p.Describe.GetProtocols())
	}
	for i := uint64(1); i <= 3; i++ {
		err := p.Tick("beat", i)
		if (err != nil) != (i == 3) {
			t.Fatalf("tick %d: %v", i, err)
		}
	}
	if len(got) != 3 || got[0].Name != "beat" || got[2].Count != 3 {
		t.Fatalf("ticks %+v", got)
	}
}
