package systemd

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// envNotifySocket names the service manager's notification socket.
const envNotifySocket = "NOTIFY_SOCKET"

// maxNotifyLen bounds a notification: systemd reads each into a buffer of
// PIPE_BUF (4096) bytes and ignores one that fills it.
const maxNotifyLen = 4095

// notifyTimeout bounds the wait for room in the manager's socket queue, so
// that a stuck manager cannot hold up a shutdown.
const notifyTimeout = 5 * time.Second

// Notify sends state — newline-separated assignments such as "READY=1" or
// "STATUS=serving\nMAINPID=123" — to the service manager as one datagram on
// the socket NOTIFY_SOCKET names: a path, or with a leading '@' an abstract
// name. It reports whether it sent: false, nil when NOTIFY_SOCKET is not set
// (the process does not run under a manager that listens); false and an
// error when NOTIFY_SOCKET is neither an absolute path nor an abstract name
// (wrapping ErrEnvironment), when state is longer than the 4095 bytes
// systemd reads, or when the send fails or the socket stays full for 5
// seconds. NOTIFY_SOCKET stays set, for later notifications and for a
// successor started in an upgrade.
//
// Whether the manager acts on a message depends on the unit's
// NotifyAccess=; with NotifyAccess=main only the main process is heard.
func Notify(state string) (bool, error) { return Env{}.Notify(state) }

// Notify is the package's Notify in e.
func (e Env) Notify(state string) (bool, error) {
	path := e.getenv(envNotifySocket)
	if path == "" {
		return false, nil
	}
	if path[0] != '/' && path[0] != '@' {
		return false, fmt.Errorf("%w: %s=%q is neither an absolute path nor an abstract name", ErrEnvironment, envNotifySocket, path)
	}
	if len(state) > maxNotifyLen {
		return false, fmt.Errorf("systemd: notification of %d bytes is longer than the %d systemd reads", len(state), maxNotifyLen)
	}
	// net maps a leading '@' to the NUL of an abstract address.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("systemd: notify: %w", err)
	}
	defer c.Close()
	timeout := e.timeout
	if timeout == 0 {
		timeout = notifyTimeout
	}
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return false, fmt.Errorf("systemd: notify: %w", err)
	}
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("systemd: notify: %w", err)
	}
	return true, nil
}

// Ready tells the manager that the service is up, or that a reload
// announced with Reloading is done (READY=1). A Type=notify unit is started
// when the manager hears it.
func Ready() (bool, error) { return Env{}.Ready() }

// Ready is the package's Ready in e.
func (e Env) Ready() (bool, error) { return e.Notify("READY=1") }

// Reloading tells the manager that the service is reloading its
// configuration (RELOADING=1), with the CLOCK_MONOTONIC time in
// microseconds (MONOTONIC_USEC=) by which systemd 253 and later match the
// message to the reload they asked for with Type=notify-reload; older ones
// ignore it. Ready must follow when the reload is done, whether or not it
// succeeded.
func Reloading() (bool, error) { return Env{}.Reloading() }

// Reloading is the package's Reloading in e.
func (e Env) Reloading() (bool, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return false, fmt.Errorf("systemd: reading CLOCK_MONOTONIC: %w", err)
	}
	usec := uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
	return e.Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10))
}

// Stopping tells the manager that the service is shutting down (STOPPING=1).
func Stopping() (bool, error) { return Env{}.Stopping() }

// Stopping is the package's Stopping in e.
func (e Env) Stopping() (bool, error) { return e.Notify("STOPPING=1") }

// MainPID tells the manager that pid is now the service's main process
// (MAINPID=pid), as the old kernel does in an upgrade once its successor is
// ready. It must be sent by the current main process under
// NotifyAccess=main, and pid must be in the service's control group unless
// the sender is root.
func MainPID(pid int) (bool, error) { return Env{}.MainPID(pid) }

// MainPID is the package's MainPID in e.
func (e Env) MainPID(pid int) (bool, error) {
	if pid <= 0 {
		return false, fmt.Errorf("systemd: MAINPID=%d is not a pid", pid)
	}
	return e.Notify("MAINPID=" + strconv.Itoa(pid))
}

// Status sets the free-form status line that systemctl status shows
// (STATUS=status); a newline in status, which would end the assignment,
// becomes a space.
func Status(status string) (bool, error) { return Env{}.Status(status) }

// Status is the package's Status in e.
func (e Env) Status(status string) (bool, error) {
	return e.Notify("STATUS=" + strings.ReplaceAll(status, "\n", " "))
}
