package kernel

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

func TestSocketTable(t *testing.T) {
	tab := newSocketTable()

	t.Run("port 0 is never shared", func(t *testing.T) {
		a, err := tab.acquire("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b, err := tab.acquire("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if a == b || a.ln.Addr().String() == b.ln.Addr().String() {
			t.Error("two port-0 acquires share a socket")
		}
		tab.release(a)
		tab.release(b)
	})

	t.Run("a fixed address is shared and closed by its last release", func(t *testing.T) {
		a, err := tab.acquire("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := a.ln.Addr().String()
		b, err := tab.acquire("tcp", addr)
		if err == nil {
			t.Fatalf("bound %s twice", addr)
		}
		_ = b
		tab.ref(a)
		tab.release(a)
		if c, err := net.Dial("tcp", addr); err != nil {
			t.Fatalf("closed after the first of two releases: %v", err)
		} else {
			c.Close()
		}
		tab.release(a)
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatal("still open after the last release")
		}
	})

	t.Run("views hand over without a gap", func(t *testing.T) {
		s, err := tab.acquire("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer tab.release(s)
		v1 := s.view()
		// A connection made while no view accepts waits in the socket.
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		v1.Close()
		if _, err := v1.Accept(); err == nil {
			t.Fatal("a closed view accepted")
		}
		v2 := s.view()
		got, err := v2.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got.Close()
		v2.Close()
	})

	t.Run("a stale unix socket is reclaimed, a live one is not", func(t *testing.T) {
		dir := testutil.ShortDir(t)
		path := filepath.Join(dir, "s.sock")
		live, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tab.acquire("unix", path); err == nil || !strings.Contains(err.Error(), "live process") {
			t.Fatalf("acquire of a live socket: %v", err)
		}
		live.(*net.UnixListener).SetUnlinkOnClose(false)
		live.Close()
		s, err := tab.acquire("unix", path)
		if err != nil {
			t.Fatalf("acquire of a stale socket: %v", err)
		}
		tab.release(s)
		if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := tab.acquire("unix", path); err == nil {
			t.Fatal("acquire replaced a regular file")
		}
	})
}

// TestUnixSocketReclaim: a UNIX socket path a dead kernel left behind is
// reclaimed; one a live process accepts on, or a file that is not a socket,
// is refused and left alone.
func TestUnixSocketReclaim(t *testing.T) {
	dir := testutil.ShortDir(t)
	table := newSocketTable()

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // as a killed kernel leaves it: the file stays, nobody accepts
	s, err := table.acquire("unix", stale)
	if err != nil {
		t.Fatalf("stale socket not reclaimed: %v", err)
	}
	c, err := net.Dial("unix", stale)
	if err != nil {
		t.Fatalf("dial the reclaimed socket: %v", err)
	}
	c.Close()
	table.release(s)

	live := filepath.Join(dir, "live.sock")
	other, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for {
			c, err := other.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := table.acquire("unix", live); err == nil || !strings.Contains(err.Error(), "a live process is listening on it") {
		t.Fatalf("acquire of a live socket: %v", err)
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Fatalf("the live socket was disturbed: %v", err)
	} else {
		c.Close()
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := table.acquire("unix", file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("acquire over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Fatal("the regular file was touched")
	}
}
