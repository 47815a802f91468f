package admin

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred returns the uid and pid of the process at the other end of a
// UNIX socket connection (SO_PEERCRED).
func peerCred(c net.Conn) (uid uint32, pid int32, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, 0, errors.New("admin: peer credentials unavailable: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("admin: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, fmt.Errorf("admin: peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, 0, fmt.Errorf("admin: peer credentials: %w", credErr)
	}
	return cred.Uid, cred.Pid, nil
}
