package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrInUse is returned, wrapped with the path, by Listen when a live process
// already answers on the socket.
var ErrInUse = errors.New("admin: socket in use by a live process")

// maxSocketPath is the longest path a UNIX socket address holds (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

// probeTimeout bounds the dial Listen uses to tell a live socket from a
// stale one.
const probeTimeout = time.Second

// DefaultSocket is where the admin socket lives when neither a flag, the
// environment nor the config names one: $XDG_RUNTIME_DIR/switchyard/admin.sock
// when XDG_RUNTIME_DIR is set, else /tmp/switchyard-$UID/admin.sock. getenv
// is usually os.Getenv.
func DefaultSocket(getenv func(string) string) string {
	if dir := getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "switchyard", "admin.sock")
	}
	return filepath.Join("/tmp", fmt.Sprintf("switchyard-%d", os.Getuid()), "admin.sock")
}

// Listen prepares the admin socket at path and listens on it.
//
// It creates missing parent directories with mode 0700 and refuses a parent
// directory that is group- or world-writable or owned by another uid. If
// something exists at path: a socket a live process answers on is left in
// place and Listen returns ErrInUse wrapped with the path; a stale socket
// (the dial is refused) is removed; anything else is an error. The new socket
// gets mode 0600.
//
// The returned listener removes the socket file when it is closed, but only
// if the file at path is still the socket Listen created (same device and
// inode). Like *net.UnixListener it has SetUnlinkOnClose(bool), to keep the
// file when the socket is handed to another process, and File, to hand it.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("admin: empty socket path")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("admin: socket path %s is %d bytes, longer than the %d a UNIX socket address holds", path, len(path), maxSocketPath)
	}
	if err := prepareDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	ul.SetUnlinkOnClose(false) // the wrapper unlinks, after checking the inode
	fail := func(err error) (net.Listener, error) {
		ul.Close()
		os.Remove(path)
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(fmt.Errorf("admin: %w", err))
	}
	dev, ino, err := fileID(path)
	if err != nil {
		return fail(fmt.Errorf("admin: %w", err))
	}
	return &socketListener{UnixListener: ul, path: path, dev: dev, ino: ino, unlink: true}, nil
}

// prepareDir creates dir with mode 0700 if it is missing and checks that it
// is a directory only the current user can write to.
func prepareDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("admin: create socket directory: %w", err)
		}
		// MkdirAll's mode passes through the umask; say exactly what we mean.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("admin: socket directory: %w", err)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("admin: socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("admin: socket directory %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("admin: socket directory %s is group- or world-writable (mode %04o); use a directory of mode 0700", dir, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := uint32(os.Geteuid()); st.Uid != uid {
			return fmt.Errorf("admin: socket directory %s is owned by uid %d, not by this process's uid %d", dir, st.Uid, uid)
		}
	}
	return nil
}

// clearStale makes sure nothing is at path: it removes a socket nobody
// answers on and refuses everything else.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin: %s exists and is not a socket (mode %s); remove it or choose another path", path, fi.Mode())
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// A busy backlog, a permission problem: we cannot tell it is stale.
		return fmt.Errorf("admin: probe existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin: remove stale socket: %w", err)
	}
	return nil
}

// fileID returns the device and inode of the file at path, without following
// a final symlink.
func fileID(path string) (dev, ino uint64, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("stat %s: no inode information", path)
	}
	return uint64(st.Dev), st.Ino, nil // Dev is not uint64 on every OS
}

// socketListener is the listener Listen returns. Its socket file is removed
// on close only while it is still the one Listen created.
type socketListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64

	mu     sync.Mutex
	unlink bool // guarded by mu
}

// SetUnlinkOnClose sets whether closing the listener removes the socket
// file (it does by default). Clear it before handing the socket to another
// process that keeps serving on it.
func (l *socketListener) SetUnlinkOnClose(unlink bool) {
	l.mu.Lock()
	l.unlink = unlink
	l.mu.Unlock()
}

// Close stops listening and removes the socket file if it is still ours.
func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.removeSocket()
	return err
}

// removeSocket removes the socket file if unlinking is on and the file at
// the path is still the socket Listen created. It is idempotent.
func (l *socketListener) removeSocket() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.unlink {
		return
	}
	if dev, ino, err := fileID(l.path); err == nil && dev == l.dev && ino == l.ino {
		os.Remove(l.path)
	}
	l.unlink = false
}

// FileListener rebuilds the listener Listen made at path from a descriptor
// of it handed to this process (a kernel upgrade passes the admin socket to
// its successor). Closing it removes the socket file as Listen's does, only
// while it is still the same file.
func FileListener(f *os.File, path string) (net.Listener, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("admin: inherited socket %s: %w", path, err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("admin: inherited socket %s is %T, not a UNIX listener", path, ln)
	}
	ul.SetUnlinkOnClose(false)
	dev, ino, err := fileID(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("admin: inherited socket: %w", err)
	}
	return &socketListener{UnixListener: ul, path: path, dev: dev, ino: ino, unlink: true}, nil
}
