package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// manager is a notification socket a test reads as systemd would, with the
// sender's credentials.
type manager struct {
	t    *testing.T
	conn *net.UnixConn
}

func listenManager(t *testing.T, addr string) *manager {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	return &manager{t: t, conn: c}
}

// read returns the next datagram and the pid that sent it.
func (m *manager) read() (string, int) {
	m.t.Helper()
	buf := make([]byte, 8192)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	m.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		m.t.Fatalf("reading a notification: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		m.t.Fatalf("control messages %v, %v", msgs, err)
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil {
		m.t.Fatal(err)
	}
	return string(buf[:n]), int(cred.Pid)
}

func monotonicUsec(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// TestNotify: every helper sends its assignment as one datagram, from this
// process, to a socket named by a path or an abstract name.
func TestNotify(t *testing.T) {
	testutil.CheckFDs(t)
	for _, tc := range []struct{ name, addr string }{
		{"path", filepath.Join(testutil.ShortDir(t), "notify")},
		{"abstract", fmt.Sprintf("@switchyard-notify-%d-%d", os.Getpid(), time.Now().UnixNano())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := listenManager(t, tc.addr)
			e := fakeEnv{"NOTIFY_SOCKET": tc.addr}.env(os.Getpid())
			expect := func(what string, sent bool, err error, want string) {
				t.Helper()
				if !sent || err != nil {
					t.Fatalf("%s = %v, %v; want true, nil", what, sent, err)
				}
				got, pid := m.read()
				if got != want {
					t.Errorf("%s sent %q, want %q", what, got, want)
				}
				if pid != os.Getpid() {
					t.Errorf("%s came from pid %d, want %d", what, pid, os.Getpid())
				}
			}
			sent, err := e.Notify("STATUS=starting\nX_CUSTOM=1")
			expect("Notify", sent, err, "STATUS=starting\nX_CUSTOM=1")
			sent, err = e.Ready()
			expect("Ready", sent, err, "READY=1")
			sent, err = e.Stopping()
			expect("Stopping", sent, err, "STOPPING=1")
			sent, err = e.MainPID(12345)
			expect("MainPID", sent, err, "MAINPID=12345")
			sent, err = e.Status("two\nlines")
			expect("Status", sent, err, "STATUS=two lines")

			before := monotonicUsec(t)
			sent, err = e.Reloading()
			after := monotonicUsec(t)
			if !sent || err != nil {
				t.Fatalf("Reloading = %v, %v", sent, err)
			}
			got, _ := m.read()
			usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
			n, err := strconv.ParseUint(usec, 10, 64)
			if !ok || err != nil || n < before || n > after {
				t.Errorf("Reloading sent %q, want RELOADING=1 and a MONOTONIC_USEC in [%d, %d]", got, before, after)
			}

			longest := "STATUS=" + strings.Repeat("x", maxNotifyLen-len("STATUS="))
			sent, err = e.Notify(longest)
			expect("Notify of 4095 bytes", sent, err, longest)
		})
	}
}

// TestNotifyFailures: no NOTIFY_SOCKET is not an error; a bad one, a
// missing socket, a message systemd would drop and a bad pid are.
func TestNotifyFailures(t *testing.T) {
	if sent, err := (fakeEnv{}).env(1).Ready(); sent || err != nil {
		t.Errorf("Ready without NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
	dir := testutil.ShortDir(t)
	listenManager(t, filepath.Join(dir, "notify"))
	for _, tc := range []struct {
		name, socket, state string
		want                string
		env                 bool // the error wraps ErrEnvironment
	}{
		{"relative path", "run/notify", "READY=1", "neither an absolute path nor an abstract name", true},
		{"vsock", "vsock:2:1234", "READY=1", "neither an absolute path", true},
		{"no such socket", filepath.Join(dir, "missing"), "READY=1", "no such file", false},
		{"too long", filepath.Join(dir, "notify"), strings.Repeat("x", maxNotifyLen+1), "longer than the 4095", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := fakeEnv{"NOTIFY_SOCKET": tc.socket}.env(1).Notify(tc.state)
			if sent || err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrEnvironment) != tc.env {
				t.Fatalf("Notify = %v, %v; want false and an error saying %q (ErrEnvironment %v)", sent, err, tc.want, tc.env)
			}
		})
	}
	for _, pid := range []int{0, -1} {
		if sent, err := (fakeEnv{"NOTIFY_SOCKET": filepath.Join(dir, "notify")}).env(1).MainPID(pid); sent || err == nil {
			t.Errorf("MainPID(%d) = %v, %v; want an error", pid, sent, err)
		}
	}
}

// TestNotifyFull: a manager that reads nothing holds a notification up for
// the timeout, not for ever.
func TestNotifyFull(t *testing.T) {
	addr := filepath.Join(testutil.ShortDir(t), "notify")
	listenManager(t, addr)
	e := fakeEnv{"NOTIFY_SOCKET": addr}.env(1)
	e.timeout = 50 * time.Millisecond
	start := time.Now()
	for i := 0; ; i++ {
		sent, err := e.Notify("STATUS=" + strings.Repeat("x", 2000))
		if err != nil {
			if sent || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Notify on a full queue = %v, %v; want a deadline error", sent, err)
			}
			t.Logf("the queue filled after %d notifications", i)
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the queue never filled")
		}
	}
}

// TestNotifyProcessEnv: the package functions read the process's
// NOTIFY_SOCKET and leave it set.
func TestNotifyProcessEnv(t *testing.T) {
	addr := filepath.Join(testutil.ShortDir(t), "notify")
	m := listenManager(t, addr)
	t.Setenv("NOTIFY_SOCKET", addr)
	for _, tc := range []struct {
		send func() (bool, error)
		want string
	}{
		{Ready, "READY=1"},
		{Stopping, "STOPPING=1"},
		{func() (bool, error) { return MainPID(7) }, "MAINPID=7"},
		{func() (bool, error) { return Status("ok") }, "STATUS=ok"},
		{func() (bool, error) { return Notify("WATCHDOG=1") }, "WATCHDOG=1"},
	} {
		if sent, err := tc.send(); !sent || err != nil {
			t.Fatalf("sending %s = %v, %v", tc.want, sent, err)
		}
		if got, _ := m.read(); got != tc.want {
			t.Errorf("sent %q, want %q", got, tc.want)
		}
	}
	if sent, err := Reloading(); !sent || err != nil {
		t.Fatalf("Reloading = %v, %v", sent, err)
	}
	if got, _ := m.read(); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("Reloading sent %q", got)
	}
	if got := os.Getenv("NOTIFY_SOCKET"); got != addr {
		t.Errorf("NOTIFY_SOCKET = %q after notifying, want it kept", got)
	}
}
