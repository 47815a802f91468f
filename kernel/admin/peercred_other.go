//go:build !linux

package admin

import (
	"errors"
	"net"
)

// peerCred is only implemented on Linux; elsewhere every peer is refused.
func peerCred(net.Conn) (uid uint32, pid int32, err error) {
	return 0, 0, errors.New("admin: peer credentials are not supported on this system")
}
