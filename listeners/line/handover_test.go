package line

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// dialogue answers as one kernel's plugins do across an upgrade, with
// label naming the kernel: it greets as echo does, numbers the lines of
// each session in its state ("n", written by version label), collects a
// block after "data" and leaves the lines hook answers (ok) to it.
func dialogue(label string, hook func(ctx context.Context, c *Conn, ev Event) (Reply, bool)) func(context.Context, *Conn, Event) (Reply, error) {
	return func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if hook != nil {
			if r, ok := hook(ctx, c, ev); ok {
				return r, nil
			}
		}
		switch ev.Kind {
		case Open:
			return lines("hello " + strconv.FormatUint(c.ID, 10)), nil
		case Line:
			st, _ := c.Session()
			n, _ := strconv.Atoi(st["n"])
			n++
			c.UpdateSession(map[string]string{"n": strconv.Itoa(n)}, nil, label)
			if string(ev.Data) == "data" {
				r := lines("354 " + label)
				r.Collect = &Collect{Terminator: ".", DotUnstuff: true, MaxBytes: 1024}
				return r, nil
			}
			return lines(fmt.Sprintf("#%d %s: %s", n, label, ev.Data)), nil
		case TooLong:
			return lines(fmt.Sprintf("too long %s: %s", label, ev.Data)), nil
		case Block:
			return lines(fmt.Sprintf("block %s %q size=%d", label, ev.Data, ev.Size)), nil
		case Close:
			return lines(fmt.Sprintf("closing %s: %s", label, ev.Reason)), nil
		}
		return Reply{}, fmt.Errorf("unknown event %v", ev.Kind)
	}
}

// handoverLimits are the limits of both servers of an upgrade test.
var handoverLimits = Limits{Telnet: true, MaxLine: 32, MaxOutput: 4 << 20}

// idsAbove numbers connections from n+1, as the next kernel's counter
// does, starting above the ids it adopts.
func idsAbove(n uint64) func() uint64 {
	var last atomic.Uint64
	last.Store(n)
	return func() uint64 { return last.Add(1) }
}

// crossProcess sends h on the trip to another process: every field but
// File through encoding/json, File through a UNIX socket as SCM_RIGHTS.
func crossProcess(t *testing.T, h Handover) Handover {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var got Handover
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if again, _ := json.Marshal(got); string(again) != string(b) {
		t.Fatalf("the handover changes across JSON:\n %s\n %s", b, again)
	}
	got.File = passFile(t, h.File)
	return got
}

// passFile sends f's descriptor over a socketpair and returns the file
// received; f is closed.
func passFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	defer f.Close()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.Sendmsg(fds[0], []byte{0}, syscall.UnixRights(int(fd)), nil, 0)
	}); err != nil || serr != nil {
		t.Fatalf("sendmsg: %v %v", err, serr)
	}
	buf, oob := make([]byte, 1), make([]byte, syscall.CmsgSpace(4))
	_, oobn, _, _, err := syscall.Recvmsg(fds[1], buf, oob, syscall.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v", msgs, err)
	}
	rights, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(rights) != 1 {
		t.Fatalf("rights %v, %v", rights, err)
	}
	return os.NewFile(uintptr(rights[0]), "passed")
}

// readExactly reads len(want) bytes and fails unless they are want.
func (cl *client) readExactly(want string) {
	cl.t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(cl.r, got); err != nil || string(got) != want {
		cl.t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// waitIn waits until the server has read n bytes of c's client.
func waitIn(t *testing.T, c *Conn, n int64) {
	t.Helper()
	testutil.WaitFor(t, testTimeout, fmt.Sprintf("conn %d to read %d bytes", c.ID, n), func() bool { return c.BytesIn() == n })
}

// waitDetaching waits until a Detach has reached c.
func waitDetaching(t *testing.T, c *Conn) {
	t.Helper()
	testutil.WaitFor(t, testTimeout, "the Detach to reach the connection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.detaching
	})
}

// detachAsync runs Detach with a test's bound and delivers its result.
func detachAsync(s *Server) <-chan detachResult {
	ch := make(chan detachResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		hs, err := s.Detach(ctx)
		ch <- detachResult{hs, err}
	}()
	return ch
}

type detachResult struct {
	hs  []Handover
	err error
}

// closeFiles closes the files of handovers a test does not adopt.
func closeFiles(hs []Handover) {
	for _, h := range hs {
		if h.File != nil {
			h.File.Close()
		}
	}
}

// TestDetachAdopt is an upgrade in the middle of every kind of dialogue:
// sessions are detached from one server, cross a process boundary (JSON
// and SCM_RIGHTS) and are adopted by a second server with another
// Dispatcher, which carries on. Each client, on its own connection, reads
// every reply once and in order; ids, state, counters and Since carry
// over; the first server dispatches no Close, the second no Open.
func TestDetachAdopt(t *testing.T) {
	testutil.CheckFDs(t)
	entered, release := make(chan struct{}), make(chan struct{})
	dA := newDispatcher(dialogue("A", func(ctx context.Context, c *Conn, ev Event) (Reply, bool) {
		if ev.Kind == Line && string(ev.Data) == "slow" {
			close(entered)
			<-release
			c.UpdateSession(map[string]string{"n": "1"}, nil, "A")
			return lines("slow done A"), true
		}
		return Reply{}, false
	}))
	a := startServer(t, "tcp", Config{Limits: handoverLimits}, dA)
	dB := newDispatcher(dialogue("B", nil))
	b := startServer(t, "tcp", Config{Limits: handoverLimits, NextID: idsAbove(100)}, dB)

	// idle: a line answered, then nothing.
	idle := a.dial(t)
	idle.send("one\r\n")
	idle.expect("#1 A: one")
	// partial: a line without its LF yet.
	partial := a.dial(t)
	partial.send("hel")
	waitIn(t, a.Lookup(partial.id), 3)
	// block: a block half collected, its last line partial.
	block := a.dial(t)
	block.send("data\r\n")
	block.expect("354 A")
	block.send("line1\r\n..dot\r\npart")
	waitIn(t, a.Lookup(block.id), 6+18)
	// telnet: IAC WILL sent, its option byte not yet.
	telnet := a.dial(t)
	telnet.send("ab\xff\xfb")
	waitIn(t, a.Lookup(telnet.id), 4)
	// toolong: a line past MaxLine being discarded.
	toolong := a.dial(t)
	toolong.send(strings.Repeat("x", 40))
	toolong.expect("too long A: " + strings.Repeat("x", 32))
	waitIn(t, a.Lookup(toolong.id), 40)
	// output: a client that has not read 1 MiB queued for it. The
	// server's send buffer is made small so that most of it is still
	// queued; the client's receive buffer is left alone, as a receive
	// window smaller than the loopback MSS stalls TCP in its persist
	// state for seconds whoever writes.
	output := a.dial(t)
	oc := a.Lookup(output.id)
	if err := oc.rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	}); err != nil {
		t.Fatal(err)
	}
	const outLines = 8192
	for i := range outLines {
		if err := oc.Send(fmt.Appendf(nil, "out %04d %s\r\n", i, strings.Repeat(".", 115))); err != nil {
			t.Fatal(err)
		}
	}
	// busy: Detach comes while its event is dispatched; the next line
	// was read with it.
	busy := a.dial(t)
	busy.send("slow\r\nafter\r\n")
	<-entered

	done := detachAsync(a.Server)
	waitDetaching(t, a.Lookup(busy.id))
	close(release)
	busy.expect("slow done A")
	res := <-done
	if res.err != nil {
		closeFiles(res.hs)
		t.Fatalf("Detach: %v", res.err)
	}
	hs := map[uint64]Handover{}
	for _, h := range res.hs {
		hs[h.ID] = h
	}
	all := []*client{idle, partial, block, telnet, toolong, output, busy}
	if len(hs) != len(all) {
		closeFiles(res.hs)
		t.Fatalf("%d sessions handed over, want %d", len(hs), len(all))
	}
	for _, cl := range all {
		if _, ok := hs[cl.id]; !ok {
			closeFiles(res.hs)
			t.Fatalf("conn %d was not handed over", cl.id)
		}
		if slices.Contains(dA.kinds(cl.id), Close) {
			t.Errorf("conn %d: a Close event on the detaching server", cl.id)
		}
	}
	if n := len(a.Conns()); n != 0 {
		t.Errorf("%d connections left on the detached server", n)
	}

	// What each session carries.
	if h := hs[partial.id]; string(h.Framer.Line)+string(h.Input) != "hel" {
		t.Errorf("partial: line %q, input %q; want hel between them", h.Framer.Line, h.Input)
	}
	if h := hs[block.id]; h.Framer.Block == nil || h.Framer.Block.Terminator != "." {
		t.Errorf("block: framer %+v, want a block being collected", h.Framer)
	}
	if h := hs[telnet.id]; h.Framer.Telnet != "will" && string(h.Input) != "\xff\xfb" {
		t.Errorf("telnet: framer %+v, input %q; want IAC WILL pending", h.Framer, h.Input)
	}
	if h := hs[toolong.id]; !h.Framer.Discard {
		t.Errorf("toolong: framer %+v, want the line discarded", h.Framer)
	}
	t.Logf("output: %d of %d bytes handed over unwritten", len(hs[output.id].Output), outLines*126)
	if h := hs[output.id]; len(h.Output) == 0 {
		t.Error("output: nothing left unsent with 1 MiB queued for a client that reads nothing")
	}
	// One write of both lines arrives in one segment on loopback, so the
	// line after the busy one was read and not yet framed.
	if h := hs[busy.id]; string(h.Input) != "after\r\n" {
		t.Errorf("busy: input %q, want the line read after the slow one", h.Input)
	}
	for _, cl := range all {
		h := hs[cl.id]
		c := a.Server // the detached server knows nothing of it now
		if c.Lookup(cl.id) != nil {
			t.Errorf("conn %d still listed", cl.id)
		}
		if h.Listener != "test" || h.Remote != cl.c.LocalAddr().String() || h.Local != cl.c.RemoteAddr().String() || h.Since.IsZero() {
			t.Errorf("conn %d: handover %+v", cl.id, h)
		}
	}
	if h := hs[idle.id]; h.Version != "A" || !maps.Equal(h.State, map[string]string{"n": "1"}) || h.BytesIn != 5 {
		t.Errorf("idle: state %v version %q bytes in %d", h.State, h.Version, h.BytesIn)
	}

	// Adopt them all after their trip to another process.
	for _, cl := range all {
		h := crossProcess(t, hs[cl.id])
		dB.adopting(h.ID)
		if err := b.Adopt(h); err != nil {
			t.Fatalf("Adopt conn %d: %v", cl.id, err)
		}
		c := b.Lookup(cl.id)
		if c == nil {
			t.Fatalf("conn %d not served after Adopt", cl.id)
		}
		st, v := c.Session()
		if len(h.Input) > 0 {
			// Its input is being dispatched by now.
			st, v = h.State, h.Version
		}
		if !c.Since.Equal(h.Since) || v != h.Version || !maps.Equal(st, h.State) || c.BytesIn() < h.BytesIn || c.BytesOut() < h.BytesOut {
			t.Errorf("conn %d adopted as since %v, state %v %q, bytes %d/%d; handed over %+v", cl.id, c.Since, st, v, c.BytesIn(), c.BytesOut(), h)
		}
		if c.Remote.String() != cl.c.LocalAddr().String() {
			t.Errorf("conn %d adopted with remote %v", cl.id, c.Remote)
		}
	}

	idle.send("two\r\n")
	idle.expect("#2 B: two")
	partial.send("lo\r\n")
	partial.expect("#1 B: hello")
	block.send("ial\r\n.\r\nafter\r\n")
	block.expect(`block B "line1\r\n.dot\r\npartial\r\n" size=23`, "#2 B: after")
	telnet.send("\x18cd\r\n")
	telnet.readExactly("\xff\xfe\x18" + "#1 B: abcd\r\n")
	toolong.send("yyy\r\nnext\r\n")
	toolong.expect("#1 B: next")
	for i := range outLines {
		output.expect(fmt.Sprintf("out %04d %s", i, strings.Repeat(".", 115)))
	}
	output.send("next\r\n")
	output.expect("#1 B: next")
	busy.expect("#2 B: after")

	// A new connection to the adopting server gets an id above them.
	fresh := b.dial(t)
	if fresh.id != 101 {
		t.Errorf("new connection id %d, want 101", fresh.id)
	}

	// Nothing more comes to any client but the adopting server's goodbye.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := b.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, cl := range all {
		cl.expect("closing B: shutdown")
		cl.expectEOF()
		if got := dA.kinds(cl.id); slices.Contains(got, Close) {
			t.Errorf("conn %d: events on the detaching server %v", cl.id, got)
		}
		if got := dB.kinds(cl.id); len(got) == 0 || got[0] == Open || got[len(got)-1] != Close {
			t.Errorf("conn %d: events on the adopting server %v", cl.id, got)
		}
	}
	if err := a.shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Detach: %v", err)
	}
}

// TestDetachExpired: Detach with a ctx that has ended while an event is
// stuck cancels that dispatch and ends its session as Shutdown would, with
// a Close event; an idle session is handed over all the same.
func TestDetachExpired(t *testing.T) {
	testutil.CheckFDs(t)
	entered := make(chan struct{})
	dA := newDispatcher(dialogue("A", func(ctx context.Context, c *Conn, ev Event) (Reply, bool) {
		if ev.Kind == Line && string(ev.Data) == "stuck" {
			close(entered)
			<-ctx.Done()
			return lines("cancelled"), true
		}
		return Reply{}, false
	}))
	a := startServer(t, "tcp", Config{}, dA)
	dB := newDispatcher(dialogue("B", nil))
	b := startServer(t, "tcp", Config{NextID: idsAbove(100)}, dB)

	stuck, idle := a.dial(t), a.dial(t)
	stuck.send("stuck\r\n")
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	hs, err := a.Detach(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Detach = %v, want context.Canceled", err)
	}
	if len(hs) != 1 || hs[0].ID != idle.id {
		closeFiles(hs)
		t.Fatalf("handed over %v, want only conn %d", hs, idle.id)
	}
	if r := dA.waitClose(t, stuck.id); r != ReasonShutdown {
		t.Errorf("Close reason %q, want %q", r, ReasonShutdown)
	}
	if _, err := io.Copy(io.Discard, stuck.c); err != nil && !isReset(err) {
		t.Errorf("the stuck client reads %v, want EOF or a reset", err)
	}
	if got := dA.kinds(idle.id); slices.Contains(got, Close) {
		t.Errorf("idle: events %v on the detaching server", got)
	}
	dB.adopting(hs[0].ID)
	if err := b.Adopt(crossProcess(t, hs[0])); err != nil {
		t.Fatal(err)
	}
	idle.send("still here\r\n")
	idle.expect("#1 B: still here")
	if err := a.shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Detach: %v", err)
	}
}

// TestDetachThenShutdown: a reply's Close during a Detach is honoured (the
// session ends there, with its Close event, and is not handed over);
// after Detach, Shutdown returns at once, Serve has returned, nothing is
// accepted, and a second Detach or an Adopt is refused, the adopted file
// closed.
func TestDetachThenShutdown(t *testing.T) {
	testutil.CheckFDs(t)
	entered, release := make(chan struct{}), make(chan struct{})
	d := newDispatcher(dialogue("A", func(ctx context.Context, c *Conn, ev Event) (Reply, bool) {
		if ev.Kind == Line && string(ev.Data) == "slow quit" {
			close(entered)
			<-release
			r := lines("bye A")
			r.Close = true
			return r, true
		}
		return Reply{}, false
	}))
	a := startServer(t, "tcp", Config{}, d)
	quitting, idle := a.dial(t), a.dial(t)
	quitting.send("slow quit\r\nnot read\r\n")
	<-entered
	done := detachAsync(a.Server)
	waitDetaching(t, a.Lookup(quitting.id))
	close(release)
	quitting.expect("bye A", "closing A: closed by handler")
	quitting.expectEOF()
	res := <-done
	if res.err != nil || len(res.hs) != 1 || res.hs[0].ID != idle.id {
		closeFiles(res.hs)
		t.Fatalf("Detach = %v, %v; want conn %d alone", res.hs, res.err, idle.id)
	}
	if r := d.waitClose(t, quitting.id); r != ReasonHandler {
		t.Errorf("Close reason %q, want %q", r, ReasonHandler)
	}
	if err := a.shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Detach: %v", err)
	}
	select {
	case err := <-a.served:
		a.served <- err // for the cleanup's check
	case <-time.After(testTimeout):
		t.Error("Serve did not return after Detach")
	}
	if c, err := net.Dial(a.network, a.addr); err == nil {
		c.Close()
		t.Error("a connection was accepted after Detach")
	}
	if _, err := a.Detach(context.Background()); !errors.Is(err, ErrServerClosed) {
		t.Errorf("second Detach = %v, want ErrServerClosed", err)
	}
	if err := a.Adopt(res.hs[0]); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Adopt on a detached server = %v, want ErrServerClosed", err)
	}
	// The refused Adopt closed the file, the socket's last descriptor.
	idle.expectEOF()
	if got := d.kinds(idle.id); slices.Contains(got, Close) {
		t.Errorf("idle: events %v", got)
	}
}

// TestAdoptClientGone: a session whose client hung up after the Detach
// ends on the adopting server with a Close event (ReasonClient), and no
// Open.
func TestAdoptClientGone(t *testing.T) {
	testutil.CheckFDs(t)
	dA := newDispatcher(dialogue("A", nil))
	a := startServer(t, "tcp", Config{}, dA)
	dB := newDispatcher(dialogue("B", nil))
	b := startServer(t, "tcp", Config{NextID: idsAbove(100)}, dB)
	cl := a.dial(t)
	cl.send("hi\r\npartial")
	cl.expect("#1 A: hi")
	waitIn(t, a.Lookup(cl.id), 11)
	hs, err := a.Detach(context.Background())
	if err != nil || len(hs) != 1 {
		closeFiles(hs)
		t.Fatalf("Detach = %v, %v", hs, err)
	}
	cl.c.Close()
	dB.adopting(hs[0].ID)
	if err := b.Adopt(crossProcess(t, hs[0])); err != nil {
		t.Fatal(err)
	}
	if r := dB.waitClose(t, cl.id); r != ReasonClient {
		t.Errorf("Close reason %q, want %q", r, ReasonClient)
	}
	if got := dB.kinds(cl.id); !slices.Equal(got, []Kind{Close}) {
		t.Errorf("events on the adopting server %v, want Close alone", got)
	}
	if got := dA.kinds(cl.id); !slices.Equal(got, []Kind{Open, Line}) {
		t.Errorf("events on the detaching server %v", got)
	}
	testutil.WaitFor(t, testTimeout, "the adopted connection to go", func() bool { return b.Stats().Connections == 0 })
}

// gateListener holds each accepted connection until gate is closed, so a
// test can have Accept return after the listener was closed, as a
// connection accepted at the moment a Detach begins does.
type gateListener struct {
	net.Listener
	gate chan struct{}
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	<-l.gate
	return c, nil
}

// TestDetachAcceptRace: a connection Serve accepts while a Detach closes
// the listener is opened and handed over with the others, not dropped.
func TestDetachAcceptRace(t *testing.T) {
	testutil.CheckFDs(t)
	testutil.CheckGoroutines(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &gateListener{Listener: inner, gate: make(chan struct{})}
	dA := newDispatcher(dialogue("A", nil))
	a := serveOn(t, ln, Config{}, dA)
	dB := newDispatcher(dialogue("B", nil))
	b := startServer(t, "tcp", Config{NextID: idsAbove(100)}, dB)

	cl := a.connect(t) // accepted by the kernel, held at the gate
	done := detachAsync(a.Server)
	testutil.WaitFor(t, testTimeout, "the Detach to begin", a.isShutdown)
	close(ln.gate)
	res := <-done
	if res.err != nil || len(res.hs) != 1 {
		closeFiles(res.hs)
		t.Fatalf("Detach = %v, %v; want one session", res.hs, res.err)
	}
	h := res.hs[0]
	dB.adopting(h.ID)
	if err := b.Adopt(crossProcess(t, h)); err != nil {
		t.Fatal(err)
	}
	cl.expect(fmt.Sprintf("hello %d", h.ID))
	cl.send("x\r\n")
	cl.expect("#1 B: x")
	if got := dA.kinds(h.ID); !slices.Equal(got, []Kind{Open}) {
		t.Errorf("events on the detaching server %v, want Open alone", got)
	}
}

// TestAdoptRefused: a handover without a file, with an id in use or with
// a framer state no framer can be in is refused, and its file closed;
// without Config.NextID the server's ids move past adopted ones.
func TestAdoptRefused(t *testing.T) {
	testutil.CheckFDs(t)
	dA := newDispatcher(dialogue("A", nil))
	a := startServer(t, "tcp", Config{}, dA)
	dB := newDispatcher(dialogue("B", nil))
	b := startServer(t, "tcp", Config{}, dB)
	var cls []*client
	for range 3 {
		cls = append(cls, a.dial(t))
	}
	hs, err := a.Detach(context.Background())
	if err != nil || len(hs) != 3 {
		closeFiles(hs)
		t.Fatalf("Detach = %v, %v", hs, err)
	}
	if err := b.Adopt(Handover{ID: 7}); !errors.Is(err, ErrBadHandover) {
		t.Errorf("Adopt without a file = %v, want ErrBadHandover", err)
	}
	bad := hs[0]
	bad.Framer.Telnet = "bogus"
	if err := b.Adopt(bad); !errors.Is(err, ErrBadHandover) {
		t.Errorf("Adopt with a bad framer state = %v, want ErrBadHandover", err)
	}
	cls[0].expectEOF()
	dB.adopting(hs[1].ID)
	if err := b.Adopt(hs[1]); err != nil {
		t.Fatal(err)
	}
	dup := hs[2]
	dup.ID = hs[1].ID
	if err := b.Adopt(dup); !errors.Is(err, ErrBadHandover) {
		t.Errorf("Adopt of an id in use = %v, want ErrBadHandover", err)
	}
	cls[2].expectEOF()
	cls[1].send("on B\r\n")
	cls[1].expect("#1 B: on B")
	if fresh := b.dial(t); fresh.id != hs[1].ID+1 {
		t.Errorf("new connection id %d, want %d", fresh.id, hs[1].ID+1)
	}
}

// TestDetachIdleMany: many idle connections parked in their RawConn read,
// over TCP and UNIX sockets, are woken and handed over, each with its
// partial line.
func TestDetachIdleMany(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) { testDetachIdleMany(t, network) })
	}
}

func testDetachIdleMany(t *testing.T, network string) {
	testutil.CheckFDs(t)
	dA := newDispatcher(dialogue("A", nil))
	a := startServer(t, network, Config{}, dA)
	dB := newDispatcher(dialogue("B", nil))
	b := startServer(t, network, Config{NextID: idsAbove(1000)}, dB)
	const n = 40
	cls := make([]*client, n)
	for i := range cls {
		cls[i] = a.dial(t)
		cls[i].send("part " + strconv.Itoa(i))
	}
	for i, cl := range cls {
		waitIn(t, a.Lookup(cl.id), int64(len("part "+strconv.Itoa(i))))
	}
	hs, err := a.Detach(context.Background())
	if err != nil || len(hs) != n {
		closeFiles(hs)
		t.Fatalf("Detach = %d sessions, %v", len(hs), err)
	}
	var wg sync.WaitGroup
	for _, h := range hs {
		dB.adopting(h.ID)
		if err := b.Adopt(crossProcess(t, h)); err != nil {
			t.Fatal(err)
		}
	}
	for i, cl := range cls {
		wg.Go(func() {
			cl.send(" done\r\n")
			if got, want := cl.line(), fmt.Sprintf("#1 B: part %d done", i); got != want {
				t.Errorf("conn %d: %q, want %q", cl.id, got, want)
			}
		})
	}
	wg.Wait()
}

// TestDetachPipe: a connection without a file descriptor cannot be handed
// over; Detach ends it as Shutdown would, with a Close event.
func TestDetachPipe(t *testing.T) {
	testutil.CheckGoroutines(t)
	ln := newPipeListener()
	d := newDispatcher(dialogue("A", nil))
	a := serveOn(t, ln, Config{}, d)
	cl := newClient(t, ln.dial(t))
	cl.expect("hello 1")
	done := detachAsync(a.Server)
	cl.expect("closing A: shutdown")
	cl.expectEOF()
	if res := <-done; res.err != nil || len(res.hs) != 0 {
		closeFiles(res.hs)
		t.Fatalf("Detach = %v, %v; want nothing handed over", res.hs, res.err)
	}
	if r := d.waitClose(t, 1); r != ReasonShutdown {
		t.Errorf("Close reason %q, want %q", r, ReasonShutdown)
	}
	if len(a.logs.Find("the connection cannot be handed over; ending it")) != 1 {
		t.Error("the failed handover was not logged")
	}
}
