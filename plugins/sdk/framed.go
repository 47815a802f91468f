package sdk

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// inheritedCalls takes the sockets the kernel passed the process for calls
// (proto.CallsFDsEnv), and removes the variable so that programs the plugin
// runs neither see it nor inherit the sockets. A descriptor that is not a
// socket is reported on stderr and skipped.
func inheritedCalls() []net.Conn {
	v := os.Getenv(proto.CallsFDsEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(proto.CallsFDsEnv)
	var conns []net.Conn
	for _, s := range strings.Split(v, ",") {
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 3 {
			fmt.Fprintf(os.Stderr, "switchyard plugin: %s=%q: %q is not a descriptor\n", proto.CallsFDsEnv, v, s)
			continue
		}
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "calls-"+s)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchyard plugin: %s: descriptor %d: %v\n", proto.CallsFDsEnv, fd, err)
			continue
		}
		conns = append(conns, c)
	}
	return conns
}
