package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// procRunner is go-plugin's runner for one plugin process. It differs from
// go-plugin's own command runner in three ways: it verifies the executable's
// checksum right before exec; it starts the process from a goroutine locked
// to its OS thread that lives as long as the process, so that Pdeathsig (which
// fires when the *thread* that forked the child ends) kills the plugin if,
// and only if, the kernel dies; and it puts the plugin in its own process
// group, so a terminal's ^C reaches the kernel alone and Kill reaches the
// plugin's children too.
type procRunner struct {
	path   string
	sha256 string // hex; "" skips the check
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr io.ReadCloser

	mu      sync.Mutex
	pid     int  // guarded by mu
	started bool // guarded by mu
	killed  bool // Kill was called before Start; guarded by mu

	waited  chan struct{} // closed when the process has been reaped
	waitErr error         // set before waited is closed

	// calls are the kernel's ends of the framed calls sockets, for the
	// Client; childCalls the plugin's, closed here once it has them.
	calls      []net.Conn
	childCalls []*os.File
}

var _ runner.Runner = (*procRunner)(nil)

// newProcRunner prepares the process, with calls framed calls sockets
// passed to it (see proto.CallsFDsEnv).
func newProcRunner(path, sum, dir string, args, env []string, calls int) (*procRunner, error) {
	cmd := exec.Command(path, args...)
	hostEnds, childEnds, err := callsSockets(calls)
	if err != nil {
		return nil, fmt.Errorf("calls sockets: %w", err)
	}
	fds := make([]string, len(childEnds))
	for i := range childEnds {
		fds[i] = strconv.Itoa(3 + i)
	}
	cmd.ExtraFiles = childEnds
	cmd.Env = append(env, proto.CallsFDsEnv+"="+strings.Join(fds, ","))
	cmd.Dir = dir
	if dir == "" {
		cmd.Dir = "/"
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	r := &procRunner{
		path:       path,
		sha256:     sum,
		cmd:        cmd,
		waited:     make(chan struct{}),
		calls:      hostEnds,
		childCalls: childEnds,
	}
	if r.stdout, err = cmd.StdoutPipe(); err == nil {
		r.stderr, err = cmd.StderrPipe()
	}
	if err != nil {
		r.closeChildCalls()
		r.closeCalls()
		return nil, err
	}
	return r, nil
}

// callsSockets makes n socket pairs: the kernel's ends as connections, the
// plugin's as files to pass it.
func callsSockets(n int) (host []net.Conn, child []*os.File, err error) {
	defer func() {
		if err != nil {
			for _, c := range host {
				c.Close()
			}
			for _, f := range child {
				f.Close()
			}
			host, child = nil, nil
		}
	}()
	for i := range n {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return host, child, err
		}
		child = append(child, os.NewFile(uintptr(fds[1]), fmt.Sprintf("calls-%d", i)))
		f := os.NewFile(uintptr(fds[0]), fmt.Sprintf("calls-%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return host, child, err
		}
		host = append(host, c)
	}
	return host, child, nil
}

// closeChildCalls closes this process's copies of the plugin's ends.
func (r *procRunner) closeChildCalls() {
	for _, f := range r.childCalls {
		f.Close()
	}
	r.childCalls = nil
}

// takeCalls hands the kernel's ends to the caller.
func (r *procRunner) takeCalls() []net.Conn {
	cs := r.calls
	r.calls = nil
	return cs
}

// closeCalls closes the kernel's ends, when no Client took them.
func (r *procRunner) closeCalls() {
	for _, c := range r.calls {
		c.Close()
	}
	r.calls = nil
}

func (r *procRunner) Start(context.Context) error {
	if r.sha256 != "" {
		sc := &goplugin.SecureConfig{Hash: sha256.New()}
		var err error
		if sc.Checksum, err = hex.DecodeString(r.sha256); err != nil {
			return fmt.Errorf("bad checksum %q: %w", r.sha256, err)
		}
		ok, err := sc.Check(r.path)
		if err != nil {
			return fmt.Errorf("verify checksum: %w", err)
		}
		if !ok {
			return fmt.Errorf("%s: %w", r.path, goplugin.ErrChecksumsDoNotMatch)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.killed {
		r.closeChildCalls()
		return errors.New("start cancelled")
	}
	// The plugin has its copies once started; a failed start needs none.
	defer r.closeChildCalls()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, its thread exits,
		// which by then is harmless because the process has been reaped.
		runtime.LockOSThread()
		if err := r.cmd.Start(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		<-r.waited
	}()
	if err := <-errc; err != nil {
		close(r.waited)
		return err
	}
	r.pid = r.cmd.Process.Pid
	r.started = true
	return nil
}

func (r *procRunner) Wait(context.Context) error {
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		return errors.New("process not started")
	}
	err := r.cmd.Wait()
	r.waitErr = err
	close(r.waited)
	return err
}

// Kill kills the plugin's whole process group. It is safe before Start
// (the start is then refused) and after the process exited.
func (r *procRunner) Kill(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		r.killed = true
		return nil
	}
	select {
	case <-r.waited:
		return nil
	default:
	}
	if err := syscall.Kill(-r.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// exited is closed once the process has been reaped.
func (r *procRunner) exited() <-chan struct{} { return r.waited }

// exitErr is how the process ended; valid once exited is closed.
func (r *procRunner) exitErr() error {
	<-r.waited
	return r.waitErr
}

func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *procRunner) Name() string          { return r.path }

func (r *procRunner) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		return ""
	}
	return strconv.Itoa(r.pid)
}

// hasStarted reports whether the process was started (and so will be
// reaped).
func (r *procRunner) hasStarted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

func (r *procRunner) getPid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid
}

func (r *procRunner) Diagnose(context.Context) string {
	fi, err := os.Stat(r.path)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s: %d bytes, mode %v; is it a switchyard plugin built with plugins/sdk?", r.path, fi.Size(), fi.Mode())
}

func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
