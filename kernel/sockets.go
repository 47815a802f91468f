package kernel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/kernel/config"
)

// socketTable holds the kernel's listening sockets, reference-counted by
// network and address (as Caddy does), so that a configuration reload that
// keeps an address never closes its socket, even when the listener's other
// settings change and a new front end takes over.
type socketTable struct {
	mu    sync.Mutex
	socks map[string]*socket // guarded by mu
	anon  int                // counts port-0 sockets, which are never shared; guarded by mu
}

func newSocketTable() *socketTable {
	return &socketTable{socks: make(map[string]*socket)}
}

// socketNetwork is the socket table's network for lc: "dns" for a DNS
// listener (a TCP listener and a UDP socket on one port), else "tcp" or
// "unix".
func socketNetwork(lc *config.Listener) string {
	if lc.Protocol == "dns" {
		return "dns"
	}
	return lc.Network()
}

// acquire returns the socket for network and address, binding it if no one
// holds it yet. Each acquire is paired with a release. An address with port
// 0 asks for a fresh port each time, so it is never shared.
func (t *socketTable) acquire(network, address string) (*socket, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := t.keyLocked(network, address)
	if s, ok := t.socks[key]; ok {
		s.refs++
		return s, nil
	}
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	if network == "dns" {
		ln, pc, err = listenDNS(address)
	} else {
		ln, err = listen(network, address)
	}
	if err != nil {
		return nil, err
	}
	return t.addLocked(key, ln, pc), nil
}

// keyLocked is the table's key for network and address; an address with
// port 0 gets a key of its own.
func (t *socketTable) keyLocked(network, address string) string {
	key := network + " " + address
	if network != "unix" {
		if _, port, err := net.SplitHostPort(address); err == nil && port == "0" {
			t.anon++
			key = fmt.Sprintf("%s #%d", key, t.anon)
		}
	}
	return key
}

func (t *socketTable) addLocked(key string, ln net.Listener, pc net.PacketConn) *socket {
	s := &socket{
		key:   key,
		ln:    ln,
		pc:    pc,
		refs:  1,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	s.wg.Add(1)
	go s.accept()
	t.socks[key] = s
	return s
}

// adopt puts a socket this kernel was handed (by the kernel it replaces, or
// by systemd) in the table under network and address, as acquire would
// have bound it, with one reference.
func (t *socketTable) adopt(network, address string, ln net.Listener, pc net.PacketConn) *socket {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addLocked(t.keyLocked(network, address), ln, pc)
}

// keepFiles makes closing the table's UNIX sockets leave their files: the
// kernel that takes them over goes on serving on them.
func (t *socketTable) keepFiles() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.socks {
		if ul, ok := s.ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
	}
}

// files returns duplicates of the socket's descriptors: the stream
// listener's, and the UDP socket's of a DNS listener (or nil).
func (s *socket) files() (stream, packet *os.File, err error) {
	type filer interface{ File() (*os.File, error) }
	f, ok := s.ln.(filer)
	if !ok {
		return nil, nil, fmt.Errorf("socket %s: %T has no descriptor to hand over", s.key, s.ln)
	}
	if stream, err = f.File(); err != nil {
		return nil, nil, err
	}
	if s.pc != nil {
		pf, ok := s.pc.(filer)
		if !ok {
			stream.Close()
			return nil, nil, fmt.Errorf("socket %s: %T has no descriptor to hand over", s.key, s.pc)
		}
		if packet, err = pf.File(); err != nil {
			stream.Close()
			return nil, nil, err
		}
	}
	return stream, packet, nil
}

// ref adds a reference to a socket the caller already holds.
func (t *socketTable) ref(s *socket) {
	t.mu.Lock()
	s.refs++
	t.mu.Unlock()
}

// releaseKeeping drops a reference as release does; when it is the last,
// the socket is closed with closeKeeping and its unserved connections
// returned.
func (t *socketTable) releaseKeeping(s *socket) []net.Conn {
	if t.drop(s) {
		return s.closeKeeping()
	}
	return nil
}

// release drops a reference; the last one closes the socket.
func (t *socketTable) release(s *socket) {
	if t.drop(s) {
		s.close()
	}
}

// drop removes a reference and reports whether it was the last.
func (t *socketTable) drop(s *socket) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.refs--
	if s.refs == 0 {
		delete(t.socks, s.key)
		return true
	}
	return false
}

// listen binds a stream socket. A UNIX socket path left behind by a dead
// process is reclaimed; one a live process answers on is not.
func listen(network, address string) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, address)
	}
	if err := reclaimUnixSocket(address); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(address), 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", address)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// listenDNS binds a TCP listener and a UDP socket on the same port. For
// port 0 it tries a few ports until one is free for both.
func listenDNS(address string) (net.Listener, net.PacketConn, error) {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, nil, err
	}
	for range 10 {
		ln, err := net.Listen("tcp", address)
		if err != nil {
			return nil, nil, err
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			return ln, pc, nil
		}
		ln.Close()
		if port != "0" {
			return nil, nil, err
		}
	}
	return nil, nil, fmt.Errorf("%s: found no port free for both TCP and UDP", address)
}

// reclaimUnixSocket removes a stale socket at path. It refuses to touch a
// socket a live process accepts on, or a file that is not a socket.
func reclaimUnixSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: a live process is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether it is in use: %w", path, err)
	}
	return os.Remove(path)
}

// socket is one listening socket. Its accept loop hands each connection to
// whichever view asks first, so front ends can be replaced on a live socket
// without a moment in which connections are refused.
type socket struct {
	key   string
	ln    net.Listener
	pc    net.PacketConn // a DNS listener's UDP socket, or nil
	refs  int            // guarded by socketTable.mu
	conns chan net.Conn  // unbuffered: the loop holds a connection until a view takes it
	done  chan struct{}  // closed by close
	once  sync.Once
	wg    sync.WaitGroup // the accept loop and requeues

	mu      sync.Mutex
	closing bool       // no more goroutines may start; guarded by mu
	keep    bool       // closing keeps unserved connections (closeKeeping); guarded by mu
	kept    []net.Conn // guarded by mu
}

func (s *socket) accept() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off as net/http does, and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		select {
		case s.conns <- c:
		case <-s.done:
			s.drop(c)
			return
		}
	}
}

// drop disposes of a connection the socket accepted and no view took: it
// is closed, or kept for the kernel an upgrade hands the socket to.
func (s *socket) drop(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keep {
		s.kept = append(s.kept, c)
		return
	}
	c.Close()
}

// closeKeeping closes the socket as close does, but returns the
// connections it had accepted and not yet handed to a front end instead of
// closing them: an upgrade passes them to the new kernel.
func (s *socket) closeKeeping() []net.Conn {
	s.mu.Lock()
	s.keep = true
	s.mu.Unlock()
	s.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.kept
	s.kept = nil
	return kept
}

// inject hands c, accepted by another process on this socket, to the
// socket's front ends as if the socket had accepted it.
func (s *socket) inject(c net.Conn) { s.requeue(c) }

func (s *socket) close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		close(s.done)
		s.ln.Close()
		if s.pc != nil {
			s.pc.Close()
		}
		s.wg.Wait()
	})
}

// view returns a net.Listener on the socket whose Close ends only this view.
func (s *socket) view() *socketView {
	return &socketView{s: s, closed: make(chan struct{})}
}

type socketView struct {
	s      *socket
	closed chan struct{}
	once   sync.Once
}

func (v *socketView) Accept() (net.Conn, error) {
	select {
	case <-v.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-v.s.conns:
		select {
		case <-v.closed:
			// Closed while the connection was on its way: it belongs to
			// whichever view accepts next.
			v.s.requeue(c)
			return nil, net.ErrClosed
		default:
			return c, nil
		}
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.s.done:
		return nil, net.ErrClosed
	}
}

// requeue offers c to the socket's views again.
func (s *socket) requeue(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		if s.keep {
			s.kept = append(s.kept, c)
		} else {
			c.Close()
		}
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case s.conns <- c:
		case <-s.done:
			s.drop(c)
		}
	}()
}

func (v *socketView) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *socketView) Addr() net.Addr { return v.s.ln.Addr() }

// packetView is a socket's UDP side as one front end sees it: its Close
// ends only that front end's reads, so the socket stays bound for the next.
type packetView struct {
	net.PacketConn
	closed atomic.Bool
}

func (v *packetView) ReadFrom(b []byte) (int, net.Addr, error) {
	if v.closed.Load() {
		return 0, nil, net.ErrClosed
	}
	n, addr, err := v.PacketConn.ReadFrom(b)
	if err != nil && v.closed.Load() {
		return 0, nil, net.ErrClosed
	}
	return n, addr, err
}

func (v *packetView) Close() error {
	if !v.closed.Swap(true) {
		// Wake the reader; the next front end sets its own deadlines.
		_ = v.PacketConn.SetReadDeadline(time.Now())
	}
	return nil
}
