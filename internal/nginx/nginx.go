// Package nginx starts a real nginx on loopback for switchyard's end-to-end
// tests and benchmarks: one server block per route, each passing every
// request to an SCGI address with nginx's own scgi_pass. The process runs in
// the foreground with its own prefix, configuration, logs and temporary
// files in a directory of the caller's, and is stopped with Stop.
package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Route is one server block: nginx listens on Listen (host:port) and passes
// every request to SCGI (host:port, or unix:/path). Request bodies are
// buffered (nginx's default): with scgi_request_buffering off, nginx 1.22
// declares as CONTENT_LENGTH only the part of the body it has read so far.
type Route struct {
	Listen string
	SCGI   string
}

// Config says how to run nginx.
type Config struct {
	Dir    string  // holds nginx.conf, logs and temporary files; must exist
	Routes []Route // at least one
	// Workers is worker_processes; 0 runs a single process without a
	// master (master_process off), the simplest to stop.
	Workers int
	// MaxBody is client_max_body_size in bytes (default 64 MiB).
	MaxBody int64
}

// Process is a running nginx.
type Process struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error // set before done is closed
}

// Path returns the nginx executable, or an error saying how to install it.
func Path() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("nginx not found (Debian: apt-get install nginx-light)")
}

// Conf returns the nginx.conf text for c.
func Conf(c Config) string {
	var b strings.Builder
	maxBody := c.MaxBody
	if maxBody <= 0 {
		maxBody = 64 << 20
	}
	if c.Workers <= 0 {
		b.WriteString("master_process off;\n")
	} else {
		fmt.Fprintf(&b, "worker_processes %d;\n", c.Workers)
	}
	if os.Geteuid() == 0 {
		// Workers of a root master switch to "nobody", who cannot reach
		// sockets in the caller's private directories.
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, `daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    client_max_body_size %[2]d;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
`, c.Dir, maxBody)
	for _, r := range c.Routes {
		fmt.Fprintf(&b, `    server {
        listen %s;
        location / {
            scgi_pass %s;
            scgi_param REQUEST_METHOD $request_method;
            scgi_param REQUEST_URI $request_uri;
            scgi_param QUERY_STRING $query_string;
            scgi_param CONTENT_TYPE $content_type;
            scgi_param DOCUMENT_URI $document_uri;
            scgi_param SCGI 1;
            scgi_param SERVER_PROTOCOL $server_protocol;
            scgi_param REQUEST_SCHEME $scheme;
            scgi_param HTTPS $https if_not_empty;
            scgi_param REMOTE_ADDR $remote_addr;
            scgi_param REMOTE_PORT $remote_port;
            scgi_param SERVER_PORT $server_port;
            scgi_param SERVER_NAME $server_name;
            scgi_read_timeout 60s;
            scgi_buffering off;
        }
    }
`, r.Listen, r.SCGI)
	}
	b.WriteString("}\n")
	return b.String()
}

// Start writes c's configuration and runs nginx until Stop or ctx ends.
// It returns once nginx accepts on every route's address.
func Start(ctx context.Context, c Config) (*Process, error) {
	bin, err := Path()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	confPath := filepath.Join(c.Dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(Conf(c)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-p", c.Dir, "-c", confPath, "-e", filepath.Join(c.Dir, "error.log"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// No Pdeathsig: it follows the OS thread that forked, not the process,
	// and a kernel in the same process ends threads (a retired plugin's
	// locked thread), which would kill nginx mid-test. Stop and ctx end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	p := &Process{cmd: cmd, dir: c.Dir, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range c.Routes {
		for {
			conn, err := net.DialTimeout("tcp", r.Listen, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-p.done:
				return nil, fmt.Errorf("nginx exited: %v\n%s%s", p.err, out.String(), p.ErrorLog())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				p.Stop()
				return nil, fmt.Errorf("nginx does not accept on %s after 10s\n%s", r.Listen, p.ErrorLog())
			}
		}
	}
	return p, nil
}

// Pid is the nginx process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// ErrorLog returns what nginx wrote to its error log.
func (p *Process) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "error.log"))
	return string(b)
}

// Stop asks nginx to quit at once (SIGTERM to its process group) and waits
// for it; it kills it after 5 seconds. It is safe to call more than once.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// FreePort returns a loopback host:port that was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
