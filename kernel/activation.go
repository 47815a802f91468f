package kernel

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/switchyard-dev/switchyard/internal/systemd"
	"github.com/switchyard-dev/switchyard/kernel/config"
)

// activation holds the sockets systemd passed (socket activation) until
// listeners claim them: a socket whose FileDescriptorName is a listener's
// name goes to that listener; an unnamed one to the listener whose address
// it is bound to. A DNS listener takes a stream and a datagram socket.
type activation struct {
	ls    []systemd.Listener
	taken []bool
}

func (k *Kernel) systemdSockets() (*activation, error) {
	ls, err := k.sd().Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	return &activation{ls: ls, taken: make([]bool, len(ls))}, nil
}

// find returns the index of an untaken socket of network for lc, or -1.
func (a *activation) find(lc *config.Listener, network string) int {
	for i, l := range a.ls {
		if !a.taken[i] && l.Network == network && l.Name == lc.Name {
			return i
		}
	}
	for i, l := range a.ls {
		if !a.taken[i] && l.Network == network && (l.Name == "" || l.Name == "unknown") && sameAddress(l.Address, lc.SocketAddress(), network) {
			return i
		}
	}
	return -1
}

// sameAddress compares a bound address with a configured one.
func sameAddress(bound, configured, network string) bool {
	if network == "unix" {
		return bound == configured
	}
	bh, bp, err1 := net.SplitHostPort(bound)
	ch, cp, err2 := net.SplitHostPort(configured)
	if err1 != nil || err2 != nil || bp != cp || cp == "0" {
		return false
	}
	if bh == ch {
		return true
	}
	bi, ci := net.ParseIP(bh), net.ParseIP(ch)
	return bi != nil && ci != nil && bi.Equal(ci)
}

// take returns the sockets systemd passed for lc, or nil when it passed
// none.
func (a *activation) take(lc *config.Listener) (net.Listener, net.PacketConn, error) {
	if a == nil || len(a.ls) == 0 {
		return nil, nil, nil
	}
	streamNet := lc.Network()
	i := a.find(lc, streamNet)
	j := -1
	if lc.Protocol == "dns" {
		j = a.find(lc, "udp")
	}
	if i < 0 && j < 0 {
		return nil, nil, nil
	}
	if lc.Protocol == "dns" && (i < 0 || j < 0) {
		return nil, nil, fmt.Errorf("socket activation: a dns listener needs a stream and a datagram socket (ListenStream and ListenDatagram named %q)", lc.Name)
	}
	a.taken[i] = true
	ln, err := net.FileListener(a.ls[i].File)
	if err != nil {
		return nil, nil, fmt.Errorf("socket activation: %s: %w", a.ls[i].Address, err)
	}
	var pc net.PacketConn
	if j >= 0 {
		a.taken[j] = true
		if pc, err = net.FilePacketConn(a.ls[j].File); err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("socket activation: %s: %w", a.ls[j].Address, err)
		}
	}
	return ln, pc, nil
}

// closeRest closes the passed descriptors: those listeners took are dups
// by now, the others belong to no listener.
func (a *activation) closeRest(log *slog.Logger) {
	if a == nil {
		return
	}
	for i, l := range a.ls {
		if !a.taken[i] {
			log.Warn("socket activation: a socket matches no listener; closing it", "name", l.Name, "network", l.Network, "address", l.Address)
		}
		l.File.Close()
	}
	a.ls = nil
}

// sd speaks to systemd, seeing the kernel's environment.
func (k *Kernel) sd() systemd.Env { return systemd.Env{Getenv: k.getenv} }

// listenerSocket returns lc's socket: the one the kernel an upgrade
// replaced handed over, or one systemd passed, or a new one.
func (k *Kernel) listenerSocket(lc *config.Listener, su *successor, act *activation) (*socket, error) {
	network := socketNetwork(lc)
	ln, pc, _, err := su.socket(lc.Name, network)
	if err != nil {
		return nil, err
	}
	if ln == nil {
		if ln, pc, err = act.take(lc); err != nil {
			return nil, err
		}
	}
	if ln != nil {
		return k.sockets.adopt(network, lc.SocketAddress(), ln, pc), nil
	}
	return k.sockets.acquire(network, lc.SocketAddress())
}
