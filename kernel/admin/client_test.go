package admin

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

func TestDialNothingListening(t *testing.T) {
	dir := testutil.ShortDir(t)
	stale := dir + "/stale.sock"
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()

	for _, tt := range []struct {
		name, path, want string
		is               error
	}{
		{"no file", dir + "/admin.sock",
			`no switchyard kernel answers at ` + dir + `/admin.sock (connect: no such file or directory); start one with "switchyard serve"`,
			fs.ErrNotExist},
		{"stale socket", stale,
			`no switchyard kernel answers at ` + stale + ` (connect: connection refused); start one with "switchyard serve"`,
			syscall.ECONNREFUSED},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Dial(context.Background(), tt.path)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}
}

func TestDefaultSocket(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	if got, want := DefaultSocket(env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"})), "/run/user/1000/switchyard/admin.sock"; got != want {
		t.Errorf("with XDG_RUNTIME_DIR: %s, want %s", got, want)
	}
	want := "/tmp/switchyard-" + strconv.Itoa(os.Getuid()) + "/admin.sock"
	if got := DefaultSocket(env(nil)); got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %s, want %s", got, want)
	}
	if got := DefaultSocket(env(map[string]string{"XDG_RUNTIME_DIR": ""})); got != want {
		t.Errorf("with empty XDG_RUNTIME_DIR: %s, want %s", got, want)
	}
}

func TestDoContext(t *testing.T) {
	testutil.CheckGoroutines(t)
	release := make(chan struct{})
	ts := startServer(t, handlerFunc(func(_ context.Context, cmd Command) (any, error) {
		if cmd.Name == "reload" {
			<-release
		}
		return nil, nil
	}))
	t.Cleanup(func() { close(release) }) // runs before the server stops
	c := ts.client(t)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Do(ctx, "reload slow")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do past its deadline: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Do took %v", d)
	}
	// The exchange was cut mid-way; the client will not pretend otherwise.
	if _, err := c.Do(context.Background(), "status"); err == nil {
		t.Fatal("Do on a broken client succeeded")
	}

	// Cancellation without a deadline works too.
	c2 := ts.client(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, err := c2.Do(ctx2, "reload slow"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Do: %v, want Canceled", err)
	}

	// A client whose context ended after its exchange stays usable.
	c3 := ts.client(t)
	ctx3, cancel3 := context.WithCancel(context.Background())
	if rep, err := c3.Do(ctx3, "status"); err != nil || !rep.OK {
		t.Fatalf("status: %+v, %v", rep, err)
	}
	cancel3()
	if rep := do(t, c3, "status"); !rep.OK {
		t.Fatalf("status after an old ctx ended: %+v", rep)
	}
}

func TestDoRejectsBadLines(t *testing.T) {
	testutil.CheckGoroutines(t)
	ts := startServer(t, echo)
	c := ts.client(t)
	if _, err := c.Do(context.Background(), "status\nshutdown"); err == nil {
		t.Error("line with a newline sent")
	}
	if _, err := c.Do(context.Background(), strings.Repeat("x", MaxLine+1)); err == nil {
		t.Error("oversize line sent")
	}
	if rep := do(t, c, "status"); !rep.OK {
		t.Errorf("client unusable after refusing bad lines: %+v", rep)
	}
}
