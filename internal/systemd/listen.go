package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// maxNameLen is the longest descriptor name systemd accepts (FDNAME_MAX).
const maxNameLen = 255

// unknownName is what systemd calls a descriptor that was given no name.
const unknownName = "unknown"

// The variables of socket activation.
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
)

// ErrEnvironment is wrapped by the errors that report a malformed LISTEN_*
// or NOTIFY_SOCKET variable, or names that cannot be passed in
// LISTEN_FDNAMES.
var ErrEnvironment = errors.New("systemd: malformed environment")

// Env is the environment the functions of this package read. Its zero value
// is the process's own, which is what the package-level functions use; a
// caller that keeps its own view of the environment (the kernel's getenv,
// a test's map) sets the fields, each nil one meaning the process's.
type Env struct {
	Getenv   func(string) string // nil = os.Getenv
	Unsetenv func(string) error  // nil = os.Unsetenv
	Getpid   func() int          // nil = os.Getpid

	start   int           // first passed descriptor; 0 = 3 (tests move it)
	timeout time.Duration // bound on a notification's send; 0 = 5s (tests shorten it)
}

func (e Env) getenv(k string) string {
	if e.Getenv == nil {
		return os.Getenv(k)
	}
	return e.Getenv(k)
}

func (e Env) unsetenv(k string) error {
	if e.Unsetenv == nil {
		return os.Unsetenv(k)
	}
	return e.Unsetenv(k)
}

func (e Env) getpid() int {
	if e.Getpid == nil {
		return os.Getpid()
	}
	return e.Getpid()
}

// Listener is one socket systemd passed.
type Listener struct {
	// Name is the descriptor's name from LISTEN_FDNAMES: FileDescriptorName=
	// of its socket unit, or that unit's name ("switchyard.socket") when it
	// sets none. It is "" when no name was given or the name was "unknown".
	Name string
	// File is the descriptor, with close-on-exec set. It is the caller's to
	// close; net.FileListener and net.FilePacketConn make a listener or
	// connection of a copy of it.
	File *os.File
	// Network and Address describe the socket as the kernel reports it.
	// Network is "tcp" (TCP or Multipath TCP), "udp", "unix" (stream),
	// "unixgram" or "unixpacket", and "" for anything else (a FIFO, a
	// netlink or SCTP socket), whose Address is "" too. Address is
	// "host:port" for TCP and UDP ("[::]:53" for the IPv6 wildcard) and the
	// path for UNIX sockets, with a leading '@' for an abstract name and ""
	// for an unnamed socket.
	Network, Address string
}

// Listeners returns the sockets passed to this process by socket
// activation, in descriptor order, and unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES so that children do not see them; a second call returns
// nil. It returns nil, nil when no sockets were passed: no LISTEN_PID, a
// LISTEN_PID of another process, no LISTEN_FDS or LISTEN_FDS=0.
//
// A LISTEN_PID or LISTEN_FDS that is not a positive number, more names than
// descriptors, or a passed descriptor that is not open is an error
// wrapping ErrEnvironment; the variables are unset all the same. Fewer
// names than descriptors leave the rest unnamed.
func Listeners() ([]Listener, error) { return Env{}.Listeners() }

// Listeners is the package's Listeners in e.
func (e Env) Listeners() ([]Listener, error) {
	pidVar, fdsVar, namesVar := e.getenv(envListenPID), e.getenv(envListenFDs), e.getenv(envListenFDNames)
	var errs []error
	for _, k := range []string{envListenPID, envListenFDs, envListenFDNames} {
		if err := e.unsetenv(k); err != nil {
			errs = append(errs, fmt.Errorf("systemd: unset %s: %w", k, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if pidVar == "" {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidVar)
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("%w: %s=%q is not a pid", ErrEnvironment, envListenPID, pidVar)
	}
	if pid != e.getpid() {
		return nil, nil
	}
	if fdsVar == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%w: %s=%q is not a descriptor count", ErrEnvironment, envListenFDs, fdsVar)
	}
	if n == 0 {
		return nil, nil
	}
	var names []string
	if namesVar != "" {
		names = strings.Split(namesVar, ":")
	}
	if len(names) > n {
		return nil, fmt.Errorf("%w: %s names %d descriptors, %s=%d", ErrEnvironment, envListenFDNames, len(names), envListenFDs, n)
	}
	start := e.start
	if start == 0 {
		start = listenFDsStart
	}
	// Check every descriptor before adopting any, so that an error leaves
	// no *os.File behind to close a descriptor behind the caller's back.
	for fd := start; fd < start+n; fd++ {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %s=%d, but descriptor %d: %w", ErrEnvironment, envListenFDs, n, fd, err)
		}
		if flags&unix.FD_CLOEXEC == 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
				return nil, fmt.Errorf("systemd: close-on-exec on descriptor %d: %w", fd, err)
			}
		}
	}
	ls := make([]Listener, n)
	for i := range ls {
		fd := start + i
		l := &ls[i]
		if i < len(names) && names[i] != unknownName {
			l.Name = names[i]
		}
		l.Network, l.Address = describe(fd)
		fileName := l.Name
		if fileName == "" {
			fileName = "LISTEN_FD_" + strconv.Itoa(fd)
		}
		l.File = os.NewFile(uintptr(fd), fileName)
	}
	return ls, nil
}

// describe names the network and address of the socket fd, or returns ""
// twice for what is not a TCP, UDP or UNIX socket.
func describe(fd int) (network, address string) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", "" // ENOTSOCK: a FIFO or another file
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return "", ""
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", ""
	}
	switch domain {
	case unix.AF_INET, unix.AF_INET6:
		proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if err != nil {
			return "", ""
		}
		switch {
		case typ == unix.SOCK_STREAM && (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP):
			// Go listens with Multipath TCP where the kernel has it, and
			// so may systemd (SocketProtocol=mptcp); clients see TCP.
			network = "tcp"
		case typ == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP:
			network = "udp"
		default:
			return "", ""
		}
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			return network, net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
		case *unix.SockaddrInet6:
			host := net.IP(sa.Addr[:]).String()
			if sa.ZoneId != 0 {
				zone := strconv.Itoa(int(sa.ZoneId))
				if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
					zone = ifi.Name
				}
				host += "%" + zone
			}
			return network, net.JoinHostPort(host, strconv.Itoa(sa.Port))
		}
	case unix.AF_UNIX:
		switch typ {
		case unix.SOCK_STREAM:
			network = "unix"
		case unix.SOCK_DGRAM:
			network = "unixgram"
		case unix.SOCK_SEQPACKET:
			network = "unixpacket"
		default:
			return "", ""
		}
		if sa, ok := sa.(*unix.SockaddrUnix); ok {
			return network, sa.Name // x/sys/unix writes an abstract name's NUL as '@'
		}
		return network, ""
	}
	return "", ""
}

// ListenEnv returns the variables that pass len(names) descriptors to the
// process pid the way systemd does: LISTEN_PID (left out when pid <= 0, for
// a caller that sets it after the fork, as Activate does), LISTEN_FDS and
// LISTEN_FDNAMES. The descriptors themselves must be the process's 3, 4, …
// in the order of names, which is where exec.Cmd.ExtraFiles puts them. An
// empty name is passed as "unknown", as systemd passes a descriptor without
// a name; a name longer than 255 bytes or holding ':' or a byte outside
// printable ASCII cannot be passed and is an error wrapping ErrEnvironment.
func ListenEnv(pid int, names []string) ([]string, error) {
	passed := make([]string, len(names))
	for i, name := range names {
		if name == "" {
			name = unknownName
		}
		if err := checkName(name); err != nil {
			return nil, err
		}
		passed[i] = name
	}
	var env []string
	if pid > 0 {
		env = append(env, envListenPID+"="+strconv.Itoa(pid))
	}
	env = append(env, envListenFDs+"="+strconv.Itoa(len(names)))
	if len(names) > 0 {
		env = append(env, envListenFDNames+"="+strings.Join(passed, ":"))
	}
	return env, nil
}

// checkName applies systemd's rules for a name in LISTEN_FDNAMES.
func checkName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: descriptor name %.20q… is longer than %d bytes", ErrEnvironment, name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("%w: descriptor name %q holds %q", ErrEnvironment, name, c)
		}
	}
	return nil
}

// shell is the wrapper that sets LISTEN_PID to the pid it runs as and then
// becomes the program ($0) with its arguments.
const shell = "/bin/sh"

const wrapper = `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`

// Activate prepares cmd, not yet started, to receive files the way a
// socket-activated service receives its sockets, named by names (nil, or
// one per file): it sets cmd.ExtraFiles to files, which cmd.ExtraFiles must
// not already hold any, so that they are the child's descriptors 3, 4, …;
// adds LISTEN_FDS and LISTEN_FDNAMES to the environment cmd would run with
// (dropping any LISTEN_* there); and, because LISTEN_PID must be the pid of
// the process that reads it, runs cmd.Path through /bin/sh with the wrapper
// the package doc describes. cmd.Process.Pid is then the program's pid; the
// program sees its path, not the original cmd.Args[0], as its argv[0].
// cmd keeps its directory, attributes and I/O.
func Activate(cmd *exec.Cmd, files []*os.File, names []string) error {
	switch {
	case cmd.Process != nil:
		return errors.New("systemd: Activate after the command started")
	case cmd.Err != nil:
		return cmd.Err
	case len(cmd.ExtraFiles) != 0:
		return errors.New("systemd: Activate: the command already has extra files; the passed ones must start at descriptor 3")
	case names != nil && len(names) != len(files):
		return fmt.Errorf("systemd: Activate: %d names for %d files", len(names), len(files))
	}
	if names == nil {
		names = make([]string, len(files))
	}
	listenEnv, err := ListenEnv(0, names)
	if err != nil {
		return err
	}
	env := slices.DeleteFunc(cmd.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == envListenPID || k == envListenFDs || k == envListenFDNames
	})
	cmd.Env = append(env, listenEnv...)
	cmd.ExtraFiles = slices.Clone(files)
	var args []string
	if len(cmd.Args) > 1 {
		args = cmd.Args[1:]
	}
	cmd.Args = append([]string{"sh", "-c", wrapper, cmd.Path}, args...)
	cmd.Path = shell
	return nil
}
