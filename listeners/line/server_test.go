package line

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime"
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

func TestEcho(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			d := newDispatcher(nil)
			ts := startServer(t, network, Config{}, d)
			cl := ts.dial(t)
			cl.send("hello\r\nbare lf\n\r\n")
			cl.expect("echo: hello", "echo: bare lf", "echo: ")
			// Input after the line that closes is not read.
			cl.send("quit\r\nignored\r\n")
			cl.expect("bye", "closing: closed by handler")
			cl.expectEOF()
			if r := d.waitClose(t, cl.id); r != ReasonHandler {
				t.Errorf("Close reason %q, want %q", r, ReasonHandler)
			}
			want := []Kind{Open, Line, Line, Line, Line, Close}
			if got := d.kinds(cl.id); !slices.Equal(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		})
	}
}

func TestCollectBlock(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{Limits: Limits{MaxLine: 8}}, d)
	cl := ts.dial(t)
	cl.send("data\r\n")
	cl.expect("354 go ahead")
	cl.send("a line longer than max\r\n..dot\r\n.\r\nafter\r\n")
	cl.expect(`block "a line longer than max\r\n.dot\r\n" size=31 overflow=false`, "echo: after")
	cl.send("data\r\n" + strings.Repeat("x", 100) + "\r\n.\r\n")
	cl.expect("354 go ahead", `block "" size=102 overflow=true`)
	if st := ts.Stats(); st.Requests != 5 {
		t.Errorf("%d requests, want 5 (data, block, after, data, block)", st.Requests)
	}
}

// TestEventsInOrder: many connections at once, each sending its lines
// ahead; every connection's events come in order and one at a time.
func TestEventsInOrder(t *testing.T) {
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		runtime.Gosched() // let other connections' dispatches interleave
		return echo(ctx, c, ev)
	})
	ts := startServer(t, "tcp", Config{}, d)
	const conns, n = 16, 100
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	ids := make(chan uint64, conns)
	for range conns {
		wg.Go(func() {
			if err := orderedSession(ts, n, ids); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Error(err)
	}
	for id := range ids {
		d.waitClose(t, id)
		evs := d.eventsOf(id)
		if len(evs) != n+3 || evs[0].Kind != Open || evs[n+2].Kind != Close {
			t.Errorf("conn %d: %d events", id, len(evs))
			continue
		}
		for i, ev := range evs[1 : n+1] {
			if ev.Kind != Line || string(ev.Data) != strconv.Itoa(i) {
				t.Errorf("conn %d: event %d is %s, want line %d", id, i+1, evString(ev), i)
				break
			}
		}
	}
}

// orderedSession sends n numbered lines at once, reads their echoes and
// quits.
func orderedSession(ts *testServer, n int, ids chan<- uint64) error {
	c, err := net.Dial(ts.network, ts.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	var out bytes.Buffer
	for i := range n {
		fmt.Fprintf(&out, "%d\r\n", i)
	}
	out.WriteString("quit\r\n")
	if _, err := c.Write(out.Bytes()); err != nil {
		return err
	}
	all, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	got := strings.Split(strings.TrimSuffix(string(all), "\r\n"), "\r\n")
	if len(got) != n+3 {
		return fmt.Errorf("read %d lines, want %d", len(got), n+3)
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(got[0], "hello "), 10, 64)
	if err != nil {
		return fmt.Errorf("greeting %q", got[0])
	}
	ids <- id
	for i := range n {
		if want := "echo: " + strconv.Itoa(i); got[i+1] != want {
			return fmt.Errorf("conn %d: line %d is %q, want %q", id, i+1, got[i+1], want)
		}
	}
	return nil
}

func TestIdleTimeout(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{Limits: Limits{IdleTimeout: 50 * time.Millisecond}}, d)
	cl := ts.dial(t)
	cl.send("partial line")
	cl.expect("closing: idle timeout")
	cl.expectEOF()
	if r := d.waitClose(t, cl.id); r != ReasonIdle {
		t.Errorf("Close reason %q, want %q", r, ReasonIdle)
	}
	if got := d.kinds(cl.id); !slices.Equal(got, []Kind{Open, Close}) {
		t.Errorf("events %v: the partial line was delivered", got)
	}
}

func TestClientCloses(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{}, d)
	cl := ts.dial(t)
	cl.send("one\r\npartial")
	cl.expect("echo: one")
	cl.c.Close()
	if r := d.waitClose(t, cl.id); r != ReasonClient {
		t.Errorf("Close reason %q, want %q", r, ReasonClient)
	}
	if got := d.kinds(cl.id); !slices.Equal(got, []Kind{Open, Line, Close}) {
		t.Errorf("events %v", got)
	}
}

// TestConnClose: Conn.Close from another goroutine while the connection
// waits for input, and from inside a dispatch.
func TestConnClose(t *testing.T) {
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if ev.Kind == Line && string(ev.Data) == "close me" {
			c.Close()
			if err := c.Send([]byte("x")); !errors.Is(err, ErrClosed) {
				return Reply{}, fmt.Errorf("Send on a closing conn: %v", err)
			}
			return lines("closed you"), nil
		}
		return echo(ctx, c, ev)
	})
	ts := startServer(t, "tcp", Config{}, d)

	idle := ts.dial(t)
	c := ts.Lookup(idle.id)
	if c == nil {
		t.Fatal("Lookup found no conn")
	}
	if err := c.Send([]byte("queued before close\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	idle.expect("queued before close", "closing: closed by handler")
	idle.expectEOF()
	if r := d.waitClose(t, idle.id); r != ReasonHandler {
		t.Errorf("Close reason %q, want %q", r, ReasonHandler)
	}
	if err := c.Send([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after close = %v, want ErrClosed", err)
	}
	c.Close() // again: no effect

	busy := ts.dial(t)
	busy.send("close me\r\nnot read\r\n")
	busy.expect("closed you", "closing: closed by handler")
	busy.expectEOF()
	d.waitClose(t, busy.id)
	if got := d.kinds(busy.id); !slices.Equal(got, []Kind{Open, Line, Close}) {
		t.Errorf("events %v", got)
	}
	if st := ts.Stats(); st.Errors != 0 {
		t.Errorf("%d errors", st.Errors)
	}
}

// TestSend: output from other goroutines, as a broadcast does.
func TestSend(t *testing.T) {
	var ts *testServer
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if ev.Kind == Line && strings.HasPrefix(string(ev.Data), "say ") {
			for _, o := range ts.Conns() {
				if o != c {
					if err := o.Send([]byte(fmt.Sprintf("%d says %s\r\n", c.ID, ev.Data[4:]))); err != nil {
						return Reply{}, err
					}
				}
			}
			return lines("said"), nil
		}
		return echo(ctx, c, ev)
	})
	ts = startServer(t, "tcp", Config{}, d)
	a, b, c := ts.dial(t), ts.dial(t), ts.dial(t)
	a.send("say hi\r\n")
	a.expect("said")
	b.expect(fmt.Sprintf("%d says hi", a.id))
	c.expect(fmt.Sprintf("%d says hi", a.id))

	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if err := ts.Lookup(b.id).Send([]byte("push\r\n")); err != nil {
				t.Errorf("Send %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for range 10 {
		b.expect("push")
	}
	if err := ts.Lookup(b.id).Send(nil); err != nil {
		t.Errorf("empty Send: %v", err)
	}
}

// slowClient connects with a small receive buffer and reads only the
// greeting.
func slowClient(t *testing.T, ts *testServer) (*client, *Conn) {
	t.Helper()
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	nc, err := dialer.Dial(ts.network, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, nc)
	g := cl.line()
	if cl.id, err = strconv.ParseUint(strings.TrimPrefix(g, "hello "), 10, 64); err != nil {
		t.Fatalf("greeting %q", g)
	}
	c := ts.Lookup(cl.id)
	if c == nil {
		t.Fatal("Lookup found no conn")
	}
	return cl, c
}

// TestSlowReader: a client that does not read is dropped once its output
// passes MaxOutput, and holds up nobody meanwhile.
func TestSlowReader(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{Limits: Limits{MaxOutput: 256 << 10}}, d)
	slow, c := slowClient(t, ts)
	fast := ts.dial(t)
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	var err error
	for i := 0; i < 4096 && err == nil; i++ {
		err = c.Send(chunk)
		if i%16 == 0 {
			fast.send("ping\r\n")
			fast.expect("echo: ping")
		}
	}
	if !errors.Is(err, ErrOutputFull) {
		t.Fatalf("Send = %v, want ErrOutputFull", err)
	}
	if err := c.Send(chunk); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after the drop = %v, want ErrClosed", err)
	}
	if r := d.waitClose(t, slow.id); r != ReasonOverflow {
		t.Errorf("Close reason %q, want %q", r, ReasonOverflow)
	}
	fast.send("still there?\r\n")
	fast.expect("echo: still there?")
	// The slow client sees the end of the connection.
	if _, err := io.Copy(io.Discard, slow.c); err != nil && !isReset(err) {
		t.Errorf("the slow client reads %v, want EOF or a reset", err)
	}
	if st := ts.Stats(); st.Errors != 1 {
		t.Errorf("%d errors, want 1", st.Errors)
	}
	if len(ts.logs.Find("reads too slowly")) != 1 {
		t.Error("the drop was not logged")
	}
}

// TestWriteTimeout: a write that cannot complete within WriteTimeout drops
// the connection.
func TestWriteTimeout(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{Limits: Limits{MaxOutput: 64 << 20, WriteTimeout: 50 * time.Millisecond}}, d)
	slow, c := slowClient(t, ts)
	chunk := bytes.Repeat([]byte("y"), 1<<20)
	for range 16 {
		if err := c.Send(chunk); err != nil {
			break // the writer may have given up already
		}
	}
	if r := d.waitClose(t, slow.id); r != ReasonWrite {
		t.Errorf("Close reason %q, want %q", r, ReasonWrite)
	}
	if err := c.Send(chunk); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after the drop = %v, want ErrClosed", err)
	}
	testutil.WaitFor(t, testTimeout, "the connection to go", func() bool { return ts.Stats().Connections == 0 })
	if st := ts.Stats(); st.Errors != 1 {
		t.Errorf("%d errors, want 1", st.Errors)
	}
}

func TestDispatchError(t *testing.T) {
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if ev.Kind == Line {
			switch string(ev.Data) {
			case "fail":
				r := lines("451 try again")
				r.Collect = &Collect{Terminator: "."} // not honoured with an error
				return r, errors.New("handler down")
			case "no terminator":
				r := lines("354 hmm")
				r.Collect = &Collect{}
				return r, nil
			}
		}
		return echo(ctx, c, ev)
	})
	ts := startServer(t, "tcp", Config{}, d)
	cl := ts.dial(t)
	cl.send("fail\r\nnext\r\n")
	cl.expect("451 try again", "echo: next")
	cl.send("no terminator\r\n.\r\n")
	cl.expect("354 hmm", "echo: .")
	if st := ts.Stats(); st.Errors != 2 || st.Requests != 4 {
		t.Errorf("stats %+v, want 2 errors, 4 requests", st)
	}
	recs := ts.logs.Find("dispatch failed")
	if len(recs) != 1 {
		t.Fatalf("%d dispatch failures logged, want 1", len(recs))
	}
	r := recs[0]
	want := map[string]string{"listener": "test", "conn": strconv.FormatUint(cl.id, 10), "kind": "line", "error": "handler down"}
	for k, v := range want {
		if r.Attrs[k] != v {
			t.Errorf("log attr %s = %q, want %q (record %v)", k, r.Attrs[k], v, r.Attrs)
		}
	}
	// Debug: the Dispatcher (the kernel) logs the failure with its own
	// context; the front end adds the connection's at Debug.
	if r.Level.String() != "DEBUG" || r.Attrs["remote"] == "" {
		t.Errorf("log record %v %v", r.Level, r.Attrs)
	}
}

func TestOpenFails(t *testing.T) {
	for _, mode := range []string{"error", "panic"} {
		t.Run(mode, func(t *testing.T) {
			d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
				if ev.Kind == Open {
					if mode == "panic" {
						panic("no open for you")
					}
					return lines("421 go away"), errors.New("no plugin")
				}
				return echo(ctx, c, ev)
			})
			ts := startServer(t, "tcp", Config{}, d)
			cl := ts.connect(t)
			if mode == "error" {
				cl.expect("421 go away")
			}
			cl.expectEOF()
			testutil.WaitFor(t, testTimeout, "the connection to go", func() bool { return ts.Stats().Connections == 0 })
			if got := d.kinds(1); !slices.Equal(got, []Kind{Open}) {
				t.Errorf("events %v, want only Open", got)
			}
			if st := ts.Stats(); st.Errors != 1 || st.Accepted != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestDispatcherPanic(t *testing.T) {
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if ev.Kind == Close || ev.Kind == Line && string(ev.Data) == "boom" {
			panic("kaboom")
		}
		return echo(ctx, c, ev)
	})
	ts := startServer(t, "tcp", Config{}, d)
	cl := ts.dial(t)
	cl.send("boom\r\nafter\r\n")
	cl.expect("echo: after")
	cl.send("quit\r\n")
	cl.expect("bye")
	cl.expectEOF()
	d.waitClose(t, cl.id)
	testutil.WaitFor(t, testTimeout, "the connection to go", func() bool { return ts.Stats().Connections == 0 })
	if st := ts.Stats(); st.Errors != 2 {
		t.Errorf("%d errors, want 2", st.Errors)
	}
	recs := ts.logs.Find("dispatcher panic")
	if len(recs) != 2 || recs[0].Attrs["panic"] != "kaboom" || !strings.Contains(recs[0].Attrs["stack"], "DispatchLine") {
		t.Errorf("panics logged: %v", recs)
	}
}

// TestShutdown: the event in progress is answered, every session gets a
// Close event (ReasonShutdown) whose lines are written, then Shutdown
// returns and new connections are refused.
func TestShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if ev.Kind == Line && string(ev.Data) == "slow" {
			close(entered)
			<-release
			return lines("slow done"), nil
		}
		return echo(ctx, c, ev)
	})
	ts := startServer(t, "tcp", Config{}, d)
	busy, idle := ts.dial(t), ts.dial(t)
	busy.send("slow\r\nnot read\r\n")
	<-entered
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		done <- ts.shutdown(ctx)
	}()
	idle.expect("closing: shutdown")
	idle.expectEOF()
	if r := d.waitClose(t, idle.id); r != ReasonShutdown {
		t.Errorf("Close reason %q, want %q", r, ReasonShutdown)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a dispatch was in progress", err)
	default:
	}
	close(release)
	busy.expect("slow done", "closing: shutdown")
	busy.expectEOF()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if r := d.waitClose(t, busy.id); r != ReasonShutdown {
		t.Errorf("Close reason %q, want %q", r, ReasonShutdown)
	}
	if got := d.kinds(busy.id); !slices.Equal(got, []Kind{Open, Line, Close}) {
		t.Errorf("events %v", got)
	}
	if c, err := net.Dial(ts.network, ts.addr); err == nil {
		c.Close()
		t.Error("a connection was accepted after Shutdown")
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// TestShutdownForced: a dispatch that waits for its context is cancelled
// when Shutdown's ctx ends, and Shutdown returns ctx's error once every
// goroutine has exited.
func TestShutdownForced(t *testing.T) {
	entered := make(chan struct{})
	d := newDispatcher(func(ctx context.Context, c *Conn, ev Event) (Reply, error) {
		if ev.Kind == Line && string(ev.Data) == "block" {
			close(entered)
			<-ctx.Done()
			return lines("cancelled"), ctx.Err()
		}
		return echo(ctx, c, ev)
	})
	ts := startServer(t, "tcp", Config{}, d)
	cl := ts.dial(t)
	idle := ts.dial(t)
	cl.send("block\r\n")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if n := len(ts.Conns()); n != 0 {
		t.Errorf("%d connections left after Shutdown", n)
	}
	if r := d.waitClose(t, cl.id); r != ReasonShutdown {
		t.Errorf("Close reason %q, want %q", r, ReasonShutdown)
	}
	idle.expect("closing: shutdown")
	idle.expectEOF()
	if _, err := io.Copy(io.Discard, cl.c); err != nil && !isReset(err) {
		t.Errorf("the blocked client reads %v, want EOF or a reset", err)
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	testutil.CheckGoroutines(t)
	s := New(Config{Name: "early"}, newDispatcher(nil))
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); err != nil {
		t.Errorf("Serve after Shutdown = %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the listener is open after Serve: %v", err)
	}
}

func TestShutdownRightAfterServe(t *testing.T) {
	testutil.CheckGoroutines(t)
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := New(Config{}, newDispatcher(nil))
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-served; err != nil {
			t.Fatalf("Serve = %v", err)
		}
	}
}

func TestSetLimits(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{}, d)
	cl := ts.dial(t)
	cl.send("abcdefgh\r\n")
	cl.expect("echo: abcdefgh")
	ts.SetLimits(Limits{MaxLine: 4})
	cl.send("abcdefgh\r\n")
	cl.expect("too long: abcd")

	ts.SetLimits(Limits{Telnet: true, UTF8: true})
	cl.send("\xff\xfd\x01a\xff\xffb\xc3\r\n")
	want := "\xff\xfc\x01" + "echo: a\ufffdb\ufffd\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(cl.r, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
	ts.SetLimits(Limits{Telnet: true})
	if err := ts.Lookup(cl.id).Send([]byte("\xff!\r\n")); err != nil {
		t.Fatal(err)
	}
	cl.send("x\xff\xff\r\n")
	cl.expect("\xff\xff!", "echo: x\xff\xff")

	// The idle timeout applies from the read after the next input.
	ts.SetLimits(Limits{IdleTimeout: 50 * time.Millisecond})
	cl.send("last\r\n")
	cl.expect("echo: last", "closing: idle timeout")
	cl.expectEOF()
}

func TestTelnetAnswers(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{Limits: Limits{Telnet: true}}, d)
	cl := ts.dial(t)
	cl.send("\xff\xfb\x18\xff")
	cl.send("\xfd\x03\xff\xfa\x18\x00xterm\xff\xf0hi\r\x00\r\n")
	want := "\xff\xfe\x18\xff\xfc\x03echo: hi\r\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(cl.r, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func TestStatsAndLookup(t *testing.T) {
	d := newDispatcher(nil)
	ts := startServer(t, "tcp", Config{}, d)
	a := ts.dial(t)
	b := ts.dial(t)
	a.send("hi\r\n")
	a.expect("echo: hi")
	conns := ts.Conns()
	if len(conns) != 2 || conns[0].ID != a.id || conns[1].ID != b.id {
		t.Fatalf("Conns = %v, want ids %d, %d", conns, a.id, b.id)
	}
	ca := conns[0]
	if ts.Lookup(a.id) != ca || ts.Lookup(b.id) != conns[1] || ts.Lookup(999) != nil {
		t.Error("Lookup does not match Conns")
	}
	if ca.Listener != "test" || ca.Remote.String() != a.c.LocalAddr().String() ||
		ca.Local.String() != a.c.RemoteAddr().String() || ca.Since.IsZero() {
		t.Errorf("conn %+v", ca)
	}
	if ca.BytesIn() != 4 {
		t.Errorf("BytesIn = %d, want 4", ca.BytesIn())
	}
	wantOut := int64(len("hello 1\r\necho: hi\r\n"))
	testutil.WaitFor(t, testTimeout, "BytesOut", func() bool { return ca.BytesOut() == wantOut })
	if st := ts.Stats(); st != (Stats{Connections: 2, Accepted: 2, Requests: 1}) {
		t.Errorf("Stats = %+v", st)
	}
	a.send("quit\r\n")
	a.expect("bye", "closing: closed by handler")
	a.expectEOF()
	testutil.WaitFor(t, testTimeout, "a's end", func() bool { return ts.Stats().Connections == 1 })
	if ts.Lookup(a.id) != nil || len(ts.Conns()) != 1 {
		t.Error("a closed connection is still listed")
	}
	if st := ts.Stats(); st != (Stats{Connections: 1, Accepted: 2, Requests: 2}) {
		t.Errorf("Stats = %+v", st)
	}
}

func TestNextID(t *testing.T) {
	var n atomic.Uint64
	n.Store(41)
	ts := startServer(t, "tcp", Config{NextID: func() uint64 { return n.Add(1) }}, newDispatcher(nil))
	if a, b := ts.dial(t), ts.dial(t); a.id != 42 || b.id != 43 {
		t.Errorf("ids %d, %d; want 42, 43", a.id, b.id)
	}
}

// TestIdleConnsHoldLittle: an idle connection has one goroutine (no
// writer) and no output queued.
func TestIdleConnsHoldLittle(t *testing.T) {
	ts := startServer(t, "tcp", Config{}, newDispatcher(nil))
	const n = 50
	var cls []*client
	for range n {
		cl := ts.dial(t)
		cl.send("hi\r\n")
		cl.expect("echo: hi")
		cls = append(cls, cl)
	}
	testutil.WaitFor(t, testTimeout, "the writers to exit", func() bool {
		for _, cl := range cls {
			c := ts.Lookup(cl.id)
			c.mu.Lock()
			w, out := c.writing, c.out
			c.mu.Unlock()
			if w != nil || out != nil {
				return false
			}
		}
		return true
	})
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	readers, writers := strings.Count(stacks, "line.(*Server).serveConn("), strings.Count(stacks, "line.(*Conn).writeLoop(")
	if readers != n || writers != 0 {
		t.Errorf("%d connection and %d writer goroutines for %d idle connections", readers, writers, n)
	}
}

// TestPipeConns: connections that are no syscall.Conn are read with plain
// Reads.
func TestPipeConns(t *testing.T) {
	testutil.CheckGoroutines(t)
	ln := newPipeListener()
	d := newDispatcher(nil)
	ts := serveOn(t, ln, Config{Limits: Limits{IdleTimeout: 50 * time.Millisecond}}, d)

	cl := newClient(t, ln.dial(t))
	cl.expect("hello 1")
	if ts.Lookup(1).rc != nil {
		t.Fatal("a pipe has a RawConn")
	}
	cl.send("over a pipe\r\n")
	cl.expect("echo: over a pipe")
	cl.send("quit\r\n")
	cl.expect("bye", "closing: closed by handler")
	cl.expectEOF()

	idle := newClient(t, ln.dial(t))
	idle.expect("hello 2")
	idle.expect("closing: idle timeout")
	idle.expectEOF()

	closed := newClient(t, ln.dial(t))
	closed.expect("hello 3")
	ts.SetLimits(Limits{})
	ts.Lookup(3).Close()
	closed.expect("closing: closed by handler")
	closed.expectEOF()
	for id, want := range map[uint64]string{1: ReasonHandler, 2: ReasonIdle, 3: ReasonHandler} {
		if r := d.waitClose(t, id); r != want {
			t.Errorf("conn %d: Close reason %q, want %q", id, r, want)
		}
	}
}

func TestSession(t *testing.T) {
	var c Conn
	if st, v := c.Session(); st != nil || v != "" {
		t.Errorf("new session %v %q", st, v)
	}
	in := map[string]string{"a": "1", "b": "2"}
	c.SetSession(in, "v1")
	in["a"] = "changed"
	st, v := c.Session()
	if !maps.Equal(st, map[string]string{"a": "1", "b": "2"}) || v != "v1" {
		t.Errorf("after SetSession: %v %q", st, v)
	}
	st["b"] = "changed"
	c.UpdateSession(map[string]string{"c": "3"}, []string{"a", "missing"}, "v2")
	if st, v := c.Session(); !maps.Equal(st, map[string]string{"b": "2", "c": "3"}) || v != "v2" {
		t.Errorf("after UpdateSession: %v %q", st, v)
	}
	c.UpdateSession(nil, []string{"b", "c"}, "v3")
	if st, v := c.Session(); len(st) != 0 || v != "v3" {
		t.Errorf("after deleting all: %v %q", st, v)
	}
	c.SetSession(nil, "")
	c.UpdateSession(map[string]string{"x": "1"}, nil, "v4")
	if st, _ := c.Session(); !maps.Equal(st, map[string]string{"x": "1"}) {
		t.Errorf("update from empty: %v", st)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				c.UpdateSession(map[string]string{strconv.Itoa(i): strconv.Itoa(j)}, nil, "v")
				c.Session()
			}
		})
	}
	wg.Wait()
	if st, _ := c.Session(); len(st) != 9 {
		t.Errorf("%d keys after concurrent updates, want 9", len(st))
	}
}
