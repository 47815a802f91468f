package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/plugins/proto"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// Spec says how to start one plugin process.
type Spec struct {
	// Path is the executable to run: the kernel passes a content-addressed
	// snapshot, so the watched file may be overwritten while this runs.
	Path string
	// SHA256 is the executable's expected checksum in hex, verified right
	// before exec; "" skips the check.
	SHA256 string
	Args   []string
	// Dir is the process's working directory ("" means /). The kernel
	// passes its configuration file's directory, so relative paths in a
	// plugin's settings mean what they mean in the file.
	Dir string
	// Env is the process's whole environment besides go-plugin's own
	// variables (the kernel's environment is not inherited).
	Env []string
	// SocketDir is the kernel-owned directory in which go-plugin creates a
	// directory per process for its UNIX sockets.
	SocketDir string
	// StartTimeout bounds exec to a completed handshake.
	StartTimeout time.Duration
	// Streams is how many Calls streams the caller means to pass to Open
	// (0: DefaultStreams); Start itself opens none.
	Streams int
	// Logger receives the process's output and Host.Log records.
	Logger *slog.Logger
	// Store is the shared store the Host service offers the plugin; nil
	// offers none.
	Store Store
	// Conns are the line connections the Host service lets the plugin
	// reach; nil offers none.
	Conns Conns
}

// Process is a running plugin executable and the Client that talks to it.
type Process struct {
	*Client
	gp        *goplugin.Client
	runner    *procRunner
	socketDir string          // go-plugin's socket directory for this process
	hostWG    *sync.WaitGroup // the Host service's server goroutine
	killed    sync.Once
}

// Start execs a plugin and completes go-plugin's handshake. Cancelling ctx
// aborts a start in progress (the process is killed); once Start has
// returned, ctx no longer matters. Describe, Configure and Open are the
// caller's next steps. A failed start leaves no process and no socket
// directory behind.
func Start(ctx context.Context, spec Spec) (*Process, error) {
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	spec.Logger = newLimitedLogger(spec.Logger)
	var (
		mu        sync.Mutex
		r         *procRunner // guarded by mu
		socketDir string      // go-plugin's directory for this process; guarded by mu
	)
	hp := &hostPlugin{log: spec.Logger, store: spec.Store, conns: spec.Conns, wg: new(sync.WaitGroup)}
	gp := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: sdk.Handshake(),
		Plugins:         goplugin.PluginSet{sdk.PluginName: hp},
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, dir string) (runner.Runner, error) {
			mu.Lock()
			socketDir = dir
			mu.Unlock()
			env := append(append([]string(nil), spec.Env...), cmd.Env...)
			pr, err := newProcRunner(spec.Path, spec.SHA256, spec.Dir, spec.Args, env, FramedSockets)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			r = pr
			mu.Unlock()
			if ctx.Err() != nil {
				_ = pr.Kill(ctx)
			}
			return pr, nil
		},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Managed:          false,
		SkipHostEnv:      true,
		StartTimeout:     spec.StartTimeout,
		Logger:           newHCLogger(spec.Logger, filepath.Base(spec.Path)),
		Stderr:           newLineLogger(spec.Logger, "stderr"),
		SyncStdout:       newLineLogger(spec.Logger, "stdout"),
		SyncStderr:       newLineLogger(spec.Logger, "stderr"),
		UnixSocketConfig: &goplugin.UnixSocketConfig{TempDir: spec.SocketDir},
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithInitialWindowSize(1 << 20),
			grpc.WithInitialConnWindowSize(4 << 20),
		},
	})
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if r != nil {
			_ = r.Kill(context.Background())
		}
	})
	p, err := dispense(gp)
	stopped := stop()
	if err == nil && !stopped {
		err = context.Cause(ctx)
	}
	mu.Lock()
	pr, dir := r, socketDir
	mu.Unlock()
	if err != nil {
		// go-plugin's Kill does nothing for a process that never started,
		// and only then leaves its socket directory behind.
		killGoPlugin(gp, pr)
		if pr != nil {
			pr.closeCalls()
		}
		hp.wg.Wait()
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		if pr != nil && pr.hasStarted() {
			if xerr := pr.exitErr(); xerr != nil {
				return nil, fmt.Errorf("start %s: %w (process: %v)", spec.Path, err, xerr)
			}
		}
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	p.runner = pr
	p.Client.setFramed(pr.takeCalls())
	p.socketDir = dir
	p.hostWG = hp.wg
	return p, nil
}

func dispense(gp *goplugin.Client) (*Process, error) {
	rpc, err := gp.Client()
	if err != nil {
		return nil, err
	}
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		return nil, err
	}
	c, ok := raw.(*Client)
	if !ok {
		return nil, fmt.Errorf("dispensed %T, want *host.Client", raw)
	}
	return &Process{Client: c, gp: gp}, nil
}

// killGrace is how long Kill lets go-plugin stop a process (it asks the
// plugin to stop its server, then waits two seconds before killing it)
// before Kill kills the process itself: a plugin that is stopped or wedged
// never answers go-plugin's request, and go-plugin would wait forever.
const killGrace = 4 * time.Second

// killGoPlugin runs go-plugin's Kill, and kills the process group itself if
// that has not finished within killGrace.
func killGoPlugin(gp *goplugin.Client, r *procRunner) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		gp.Kill()
	}()
	t := time.NewTimer(killGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		if r != nil {
			_ = r.Kill(context.Background())
		}
		<-done
	}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.runner.getPid() }

// Exited is closed when the process has exited, whoever ended it.
func (p *Process) Exited() <-chan struct{} { return p.runner.exited() }

// ExitErr says how the process ended (nil for exit status 0). It blocks
// until the process has exited.
func (p *Process) ExitErr() error { return p.runner.exitErr() }

// Kill stops the process: go-plugin asks it to stop its gRPC server, waits
// up to two seconds, then kills it (Kill kills it itself if the plugin does
// not answer at all). Calls still in flight fail, so drain first. Kill
// returns once the process is gone and reaped and its socket directory is
// removed; it is safe to call more than once and concurrently.
func (p *Process) Kill() {
	p.killed.Do(func() {
		p.Client.Close()
		killGoPlugin(p.gp, p.runner)
		p.hostWG.Wait()
		<-p.runner.exited()
		if p.socketDir != "" {
			_ = os.RemoveAll(p.socketDir)
		}
	})
}

// hostPlugin is the kernel side of go-plugin's GRPCPlugin: it dispenses a
// Client and serves the Host service back to the plugin over the broker, once
// per process.
type hostPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	log   *slog.Logger
	store Store
	conns Conns
	wg    *sync.WaitGroup
}

var _ goplugin.GRPCPlugin = (*hostPlugin)(nil)

func (h *hostPlugin) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host: the plugin side lives in package sdk")
}

func (h *hostPlugin) GRPCClient(_ context.Context, broker *goplugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	id := broker.NextId()
	srv := &hostServer{log: h.log, store: h.store, conns: h.conns}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
			s := grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(sdk.MaxMessageSize))...)
			proto.RegisterHostServer(s, srv)
			return s
		})
	}()
	return NewClient(conn, id), nil
}
