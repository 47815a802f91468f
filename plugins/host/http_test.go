package host

import (
	"net"
	"testing"
)

func TestAddrString(t *testing.T) {
	addrs := []net.Addr{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
		&net.TCPAddr{IP: net.IP{127, 0, 0, 1}, Port: 8080},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8081},
		&net.TCPAddr{IP: net.ParseIP("::1"), Port: 8080},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 53, Zone: "lo"},
		&net.UnixAddr{Name: "/run/sy.sock", Net: "unix"},
	}
	// Twice: formatted, then from the cache.
	for range 2 {
		for _, a := range addrs {
			if got, want := addrString(a), a.String(); got != want {
				t.Errorf("addrString(%#v) = %q, want %q", a, got, want)
			}
		}
	}
	// Past the cache's bound, addresses are still formatted right.
	for port := range 2 * maxLocalAddrs {
		a := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: port}
		if got, want := addrString(a), a.String(); got != want {
			t.Fatalf("addrString(%v) = %q", a, got)
		}
	}
	if n := len(localAddrs.m); n > maxLocalAddrs {
		t.Errorf("the cache holds %d addresses, more than %d", n, maxLocalAddrs)
	}
}
