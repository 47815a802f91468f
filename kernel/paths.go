package kernel

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// defaultStateDir is where the durable store and plugin snapshots live when
// neither -data nor state.dir says: $STATE_DIRECTORY (systemd's
// StateDirectory=), $XDG_STATE_HOME/switchyard, ~/.local/state/switchyard, or
// /var/lib/switchyard for root.
func defaultStateDir(getenv func(string) string) string {
	if d := getenv("STATE_DIRECTORY"); d != "" {
		return filepath.SplitList(d)[0]
	}
	if os.Geteuid() == 0 {
		return "/var/lib/switchyard"
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "switchyard")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "switchyard")
	}
	return filepath.Join(os.TempDir(), "switchyard-state-"+strconv.Itoa(os.Getuid()))
}

// runtimeDir is the directory for the kernel's sockets:
// $XDG_RUNTIME_DIR/switchyard, or /tmp/switchyard-$UID.
func runtimeDir(getenv func(string) string) string {
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "switchyard")
	}
	return filepath.Join(os.TempDir(), "switchyard-"+strconv.Itoa(os.Getuid()))
}

// privateDir creates dir (mode 0700) if needed and refuses one that another
// user owns or that others may write to: sockets and snapshots inside must
// not be replaceable by anyone else. owner is the uid the kernel serves as:
// a kernel started as root that drops to another user may find the
// directory already that user's.
func privateDir(dir string, owner int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() && int(st.Uid) != owner {
		return fmt.Errorf("%s belongs to uid %d, not to us (uid %d)", dir, st.Uid, owner)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by others (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

// pluginSocketDir is the kernel-owned directory in which go-plugin puts the
// UNIX sockets of plugin processes. It is keyed by the state directory,
// which one kernel at a time holds locked, so a kernel may empty it at start
// (killed plugins leave sockets behind) without touching another kernel's.
// It lives in the runtime directory because sun_path holds ~108 bytes.
// The kernel's pid is part of the name: during an upgrade the old kernel's
// plugins and the new one's run side by side.
func pluginSocketDir(runtime, stateDir string, pid int) string {
	return socketDirPrefix(runtime, stateDir) + strconv.Itoa(pid)
}

func socketDirPrefix(runtime, stateDir string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return filepath.Join(runtime, "p-"+hex.EncodeToString(sum[:6])+"-")
}

// removeSocketDirs removes the plugin socket directories of every earlier
// kernel on stateDir.
func removeSocketDirs(runtime, stateDir string) error {
	dirs, err := filepath.Glob(socketDirPrefix(runtime, stateDir) + "*")
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}

// lockStateDir takes an exclusive lock on the state directory for the
// kernel's lifetime, so two kernels never share snapshots and store. The lock
// file holds the owner's pid.
func lockStateDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "kernel.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another kernel (pid %s)", dir, trimSpace(b[:n]))
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func trimSpace(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}
