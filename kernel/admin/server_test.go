package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

func TestServeCommandsInOrder(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	c, r := ts.dial(t)

	lines := []string{"status", "reload hello", "state put k two  words", "bogus", "conns"}
	if _, err := io.WriteString(c, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"ok":true,"data":{"args":null,"name":"status"}}`,
		`{"ok":true,"data":{"args":["hello"],"name":"reload"}}`,
		`{"ok":true,"data":{"args":["k","two  words"],"name":"state put"}}`,
		`{"ok":false,"error":"unknown command \"bogus\"; known commands: ` + knownNames() + `"}`,
		`{"ok":true,"data":{"args":null,"name":"conns"}}`,
	}
	for i, w := range want {
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if got != w+"\n" {
			t.Errorf("reply to %q:\n got %s want %s", lines[i], got, w)
		}
	}
}

func TestClientSeveralCommands(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	c := ts.client(t)
	for _, line := range []string{"plugins", "state get a b", "listeners"} {
		rep := do(t, c, line)
		if !rep.OK {
			t.Fatalf("%q: %+v", line, rep)
		}
		cmd, _ := Parse(line)
		want, _ := json.Marshal(map[string]any{"name": cmd.Name, "args": cmd.Args})
		if !bytes.Equal(rep.Data, want) {
			t.Errorf("%q: data %s, want %s", line, rep.Data, want)
		}
	}
}

func TestServeErrors(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, handlerFunc(func(_ context.Context, cmd Command) (any, error) {
		switch cmd.Name {
		case "reload":
			return nil, errors.New("plugin hello: no such plugin")
		case "upgrade":
			panic("boom")
		case "shutdown":
			return nil, errors.New("")
		case "plugins":
			return make(chan int), nil
		}
		return nil, nil
	}))
	c := ts.client(t)
	for _, tt := range []struct {
		name, line string
		want       Reply
		wantErr    string
	}{
		{name: "handler error", line: "reload hello", want: Reply{Error: "plugin hello: no such plugin"}},
		{name: "parse error", line: "reload", want: Reply{Error: "usage: reload PLUGIN"}},
		{name: "panic", line: "upgrade", wantErr: "upgrade panicked: boom"},
		{name: "empty error message", line: "shutdown", want: Reply{Error: "shutdown failed"}},
		{name: "unencodable data", line: "plugins", wantErr: "admin: encode reply"},
		{name: "nil data", line: "status", want: Reply{OK: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := do(t, c, tt.line)
			if tt.wantErr != "" {
				if rep.OK || !strings.Contains(rep.Error, tt.wantErr) {
					t.Fatalf("%q: %+v, want error containing %q", tt.line, rep, tt.wantErr)
				}
				return
			}
			if rep.OK != tt.want.OK || rep.Error != tt.want.Error || len(rep.Data) != 0 {
				t.Fatalf("%q: %+v, want %+v", tt.line, rep, tt.want)
			}
		})
	}
}

func TestUnterminatedLastLine(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	c, r := ts.dial(t)
	io.WriteString(c, "status\nreload hello")
	c.(*net.UnixConn).CloseWrite()
	for _, want := range []string{"status", "reload"} {
		rep := readReply(t, r)
		var d struct{ Name string }
		json.Unmarshal(rep.Data, &d)
		if !rep.OK || d.Name != want {
			t.Fatalf("got %+v, want a reply to %s", rep, want)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the last reply: %v, want EOF", err)
	}
}

func TestOversizeLine(t *testing.T) {
	testutil.CheckGoroutines(t)
	var got []int
	var mu sync.Mutex
	ts := startServer(t, handlerFunc(func(_ context.Context, cmd Command) (any, error) {
		mu.Lock()
		got = append(got, len(cmd.Args[1]))
		mu.Unlock()
		return nil, nil
	}))

	t.Run("exactly MaxLine", func(t *testing.T) {
		prefix := "state put k "
		line := prefix + strings.Repeat("v", MaxLine-len(prefix))
		c := ts.client(t)
		if rep := do(t, c, line); !rep.OK {
			t.Fatalf("line of MaxLine bytes: %+v", rep)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 || got[0] != MaxLine-len(prefix) {
			t.Fatalf("handler saw values of lengths %v", got)
		}
	})

	t.Run("longer", func(t *testing.T) {
		c, r := ts.dial(t)
		go func() {
			// The server stops reading after MaxLine+1 bytes and hangs up;
			// the rest of this write may fail.
			io.WriteString(c, "state put k "+strings.Repeat("x", MaxLine)+"\nstatus\n")
		}()
		rep := readReply(t, r)
		if rep.OK || !strings.Contains(rep.Error, "longer than 1048576 bytes") {
			t.Fatalf("got %+v, want a line-too-long error", rep)
		}
		if b, err := r.ReadByte(); err != io.EOF {
			t.Fatalf("after the error: %q, %v; want the connection closed", b, err)
		}
	})
}

func TestListenModes(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	fi, err := os.Stat(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(strings.TrimSuffix(ts.path, "/admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if !di.IsDir() || di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want a directory with 0700", di.Mode())
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	ln, err := Listen(ts.path)
	if err == nil {
		ln.Close()
		t.Fatal("second Listen on a live socket succeeded")
	}
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), ts.path) {
		t.Fatalf("err = %v, want ErrInUse naming %s", err, ts.path)
	}
	if _, err := os.Stat(ts.path); err != nil {
		t.Fatalf("live socket was touched: %v", err)
	}
	if rep := do(t, ts.client(t), "status"); !rep.OK {
		t.Fatalf("first server no longer answers: %+v", rep)
	}
}

func TestListenReclaimsStaleSocket(t *testing.T) {
	testutil.CheckGoroutines(t)
	path := testutil.ShortDir(t) + "/admin.sock"
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ts := serveOn(t, ln, path, echo)
	if rep := do(t, ts.client(t), "status"); !rep.OK {
		t.Fatalf("%+v", rep)
	}
}

func TestListenRefuses(t *testing.T) {
	dir := testutil.ShortDir(t)
	mkdir := func(name string, mode os.FileMode) string {
		p := dir + "/" + name
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := dir + "/file"
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"group-writable dir", mkdir("g", 0o770) + "/admin.sock", "group- or world-writable (mode 0770)"},
		{"world-writable dir", mkdir("w", 0o707) + "/admin.sock", "group- or world-writable (mode 0707)"},
		{"parent is a file", file + "/admin.sock", "not a directory"},
		{"non-socket at path", file, "exists and is not a socket"},
		{"path too long", dir + "/" + strings.Repeat("x", 120), "longer than the 107"},
		{"empty path", "", "empty socket path"},
	}
	if os.Geteuid() == 0 {
		other := mkdir("other", 0o700)
		if err := os.Chown(other, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct{ name, path, wantErr string }{"dir of another uid", other + "/admin.sock", "owned by uid 4242"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := Listen(tt.path)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%s) succeeded", tt.path)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Listen(%s): %v, want %q", tt.path, err, tt.wantErr)
			}
		})
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("non-socket file changed: %q, %v", b, err)
	}
}

func TestListenAcceptsReadableDir(t *testing.T) {
	dir := testutil.ShortDir(t) + "/d"
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(dir + "/admin.sock")
	if err != nil {
		t.Fatalf("0755 directory refused: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(dir + "/admin.sock"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left the socket: %v", err)
	}
}

func TestInFlightCommandFinishesOnShutdown(t *testing.T) {
	testutil.CheckGoroutines(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var handlerCtxErr error
	ts := startServer(t, handlerFunc(func(ctx context.Context, cmd Command) (any, error) {
		if cmd.Name == "reload" {
			close(entered)
			<-release
			handlerCtxErr = ctx.Err()
			return map[string]int{"generation": 2}, nil
		}
		return nil, nil
	}))
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // even when the test fails early, before the server stops
	busy := ts.client(t)
	idle, idleR := ts.dial(t)
	io.WriteString(idle, "status\n")
	readReply(t, idleR)

	type result struct {
		rep Reply
		err error
	}
	got := make(chan result, 1)
	go func() {
		rep, err := busy.Do(context.Background(), "reload hello")
		got <- result{rep, err}
	}()
	<-entered
	ts.cancel()

	// The idle connection is closed at once, while reload still runs.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := idleR.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %q, %v; want EOF once shutdown begins", b, err)
	}
	// No new connections.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-ts.done:
		t.Fatalf("Serve returned (%v) while a command was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := os.Stat(ts.path); err != nil {
		t.Errorf("socket removed before the in-flight command finished: %v", err)
	}

	unblock()
	r := <-got
	if r.err != nil || !r.rep.OK || string(r.rep.Data) != `{"generation":2}` {
		t.Fatalf("in-flight reply: %+v, %v", r.rep, r.err)
	}
	if err := ts.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !errors.Is(handlerCtxErr, context.Canceled) {
		t.Errorf("handler ctx err = %v, want the Serve ctx (cancelled)", handlerCtxErr)
	}
	if _, err := os.Stat(ts.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket not removed after Serve: %v", err)
	}
	if _, err := busy.Do(context.Background(), "status"); err == nil {
		t.Error("connection still open after Serve returned")
	}
}

func TestCloseStopsServe(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, handlerFunc(func(context.Context, Command) (any, error) { return "bye", nil }))
	c := ts.client(t)
	do(t, c, "status")
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	ts.srv.Close() // twice is fine
	if err := ts.wait(t); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := os.Stat(ts.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket not removed: %v", err)
	}
	if err := ts.srv.Serve(context.Background(), nil); err == nil {
		t.Error("second Serve succeeded")
	}
}

func TestCloseFromHandler(t *testing.T) {
	testutil.CheckGoroutines(t)
	var srv *Server
	ts := startServer(t, handlerFunc(func(_ context.Context, cmd Command) (any, error) {
		if cmd.Name == "shutdown" {
			srv.Close()
		}
		return "stopping", nil
	}), func(s *Server) { srv = s })
	rep := do(t, ts.client(t), "shutdown")
	if !rep.OK || string(rep.Data) != `"stopping"` {
		t.Fatalf("shutdown reply %+v", rep)
	}
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestServeKeepsReplacedSocket(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	if err := os.Remove(ts.path); err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: ts.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	other.SetUnlinkOnClose(false)
	defer other.Close()
	ts.cancel()
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ts.path); err != nil {
		t.Fatalf("Serve removed a socket it did not create: %v", err)
	}
}

func TestSetUnlinkOnClose(t *testing.T) {
	path := testutil.ShortDir(t) + "/admin.sock"
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	if _, ok := ln.(interface{ File() (*os.File, error) }); !ok {
		t.Error("listener has no File method")
	}
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket removed despite SetUnlinkOnClose(false): %v", err)
	}
}

func TestServeCancelledBeforeStart(t *testing.T) {
	testutil.CheckGoroutines(t)
	path := testutil.ShortDir(t) + "/admin.sock"
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewServer(echo, nil).Serve(ctx, ln); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestAllowedPeer(t *testing.T) {
	for _, tt := range []struct {
		name      string
		uid, self uint32
		want      bool
	}{
		{"same uid", 1000, 1000, true},
		{"root peer", 0, 1000, true},
		{"other uid", 1001, 1000, false},
		{"root daemon, root peer", 0, 0, true},
		{"root daemon, user peer", 1000, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := allowedPeer(tt.uid, tt.self); got != tt.want {
				t.Fatalf("allowedPeer(%d, %d) = %v, want %v", tt.uid, tt.self, got, tt.want)
			}
		})
	}
}

func TestPeerCredOfRealSocket(t *testing.T) {
	path := testutil.ShortDir(t) + "/p.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	uid, pid, err := peerCred(sc)
	if err != nil {
		t.Fatal(err)
	}
	if uid != uint32(os.Geteuid()) || pid != int32(os.Getpid()) {
		t.Fatalf("peerCred = uid %d pid %d, want uid %d pid %d", uid, pid, os.Geteuid(), os.Getpid())
	}
	// The default check admits the test's own uid.
	if !NewServer(echo, nil).allow(uid) {
		t.Fatalf("default check refuses our own uid %d", uid)
	}
	if _, _, err := peerCred(fakeConn{}); err == nil {
		t.Fatal("peerCred of a non-socket succeeded")
	}
}

// fakeConn is a net.Conn that is no socket.
type fakeConn struct{ net.Conn }

func TestRefusedPeer(t *testing.T) {
	testutil.CheckGoroutines(t)
	called := false
	ts := startServer(t, handlerFunc(func(context.Context, Command) (any, error) {
		called = true
		return nil, nil
	}), func(s *Server) { s.allow = func(uint32) bool { return false } })

	c, r := ts.dial(t)
	rep := readReply(t, r) // before sending anything
	if rep.OK || !strings.Contains(rep.Error, "may not use this socket") {
		t.Fatalf("refusal %+v", rep)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after refusal: %v", err)
	}
	c.Close()

	// The client reports the refusal as a reply.
	cl := ts.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := cl.Do(ctx, "status")
	if err != nil || rep.OK || !strings.Contains(rep.Error, "may not use this socket") {
		t.Fatalf("client Do: %+v, %v", rep, err)
	}
	if called {
		t.Fatal("handler ran for a refused peer")
	}
}

func TestAuditLog(t *testing.T) {
	testutil.CheckGoroutines(t)
	var buf testutil.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ts := startServer(t, handlerFunc(func(_ context.Context, cmd Command) (any, error) {
		if cmd.Name == "state del" {
			return nil, errors.New("no such key")
		}
		return nil, nil
	}), func(s *Server) { s.log = log })
	c := ts.client(t)
	long := strings.Repeat("é", 300)
	for _, line := range []string{"status", "reload hello", "state del k", "bogus", "state put k " + long} {
		do(t, c, line)
	}
	ts.cancel()
	ts.wait(t)

	type entry struct {
		Level, Msg, Cmd, Err string
		UID                  *uint32
		PID                  *int32
	}
	var entries []entry
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		entries = append(entries, e)
	}
	uid, pid := uint32(os.Geteuid()), int32(os.Getpid())
	find := func(level, msg, cmd string) *entry {
		for i, e := range entries {
			if e.Level == level && e.Msg == msg && e.Cmd == cmd {
				return &entries[i]
			}
		}
		return nil
	}
	for _, w := range []struct{ level, msg, cmd string }{
		{"INFO", "admin command", "reload hello"},
		{"INFO", "admin command", "state del k"},
		{"WARN", "admin command failed", "state del k"},
	} {
		e := find(w.level, w.msg, w.cmd)
		if e == nil {
			t.Errorf("no %s %q line for %q in\n%s", w.level, w.msg, w.cmd, buf.String())
			continue
		}
		if e.UID == nil || *e.UID != uid || e.PID == nil || *e.PID != pid {
			t.Errorf("%q: uid/pid not logged as %d/%d: %+v", w.cmd, uid, pid, e)
		}
	}
	if find("INFO", "admin command", "status") != nil {
		t.Error("non-mutating status logged at Info")
	}
	var rejected, put bool
	for _, e := range entries {
		rejected = rejected || (e.Level == "WARN" && strings.Contains(e.Err, "unknown command"))
		if e.Level == "INFO" && strings.HasPrefix(e.Cmd, "state put k é") {
			put = true
			if len(e.Cmd) > auditMax+32 || !strings.HasSuffix(e.Cmd, "(612 bytes)") {
				t.Errorf("long command logged as %q", e.Cmd)
			}
		}
	}
	if !rejected || !put {
		t.Errorf("missing rejected (%v) or state put (%v) lines in\n%s", rejected, put, buf.String())
	}
}

func TestServeTwiceOnOneServer(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	do(t, ts.client(t), "status") // Serve is surely running
	ln, err := net.Listen("unix", testutil.ShortDir(t)+"/x.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ts.srv.Serve(context.Background(), ln); err == nil {
		t.Fatal("second Serve succeeded")
	}
}
