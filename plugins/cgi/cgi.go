package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

const (
	// defaultTimeout is the timeout setting when the settings leave it out.
	defaultTimeout = 30 * time.Second
	// waitDelay bounds how long a script's output and error streams are
	// read after it exited (or was killed) while something it started
	// holds them open without writing, and how long exec waits for a
	// killed script to die.
	waitDelay = time.Second
	// maxLogLine is the longest stderr line logged as one record; longer
	// lines are logged in pieces.
	maxLogLine = 4096
)

// errTimeout is the cause of a script's context when its time is up.
var errTimeout = errors.New("cgi: script timed out")

// settings are cgi's [plugins.NAME.settings].
type settings struct {
	// Dir is the directory of the scripts (required).
	Dir string `json:"dir"`
	// Timeout bounds one run of a script, as a Go duration ("30s").
	Timeout string `json:"timeout"`
	// Env are extra NAME=VALUE variables for every script; they override
	// the meta-variables of the same name.
	Env []string `json:"env"`
}

// config is the settings, checked.
type config struct {
	dir     string // absolute, symlinks resolved
	timeout time.Duration
	env     []string
}

// gateway runs CGI scripts. It is safe for concurrent use.
type gateway struct {
	version string
	conf    atomic.Pointer[config] // nil until Configure succeeds
}

func newPlugin(version string) sdk.Plugin {
	g := &gateway{version: version}
	return sdk.Plugin{
		Name:      "cgi",
		Version:   version,
		HTTP:      g,
		Configure: g.configure,
	}
}

func (g *gateway) configure(_ context.Context, c sdk.Config) error {
	s := settings{Timeout: defaultTimeout.String()}
	if err := c.Decode(&s); err != nil {
		return err
	}
	conf, err := s.check()
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	g.conf.Store(conf)
	return nil
}

// check validates the settings and resolves dir.
func (s settings) check() (*config, error) {
	if s.Dir == "" {
		return nil, errors.New("dir is required")
	}
	dir, err := filepath.Abs(s.Dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("dir: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("dir: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("dir: %s is not a directory", s.Dir)
	}
	timeout, err := time.ParseDuration(s.Timeout)
	if err != nil {
		return nil, fmt.Errorf("timeout: %w", err)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("timeout: %s is not positive", s.Timeout)
	}
	for _, e := range s.Env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || name == "" || strings.IndexByte(e, 0) >= 0 {
			return nil, fmt.Errorf("env: %q is not NAME=VALUE", e)
		}
	}
	return &config{dir: dir, timeout: timeout, env: s.Env}, nil
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conf := g.conf.Load()
	if conf == nil {
		http.Error(w, "cgi: not configured", http.StatusServiceUnavailable)
		return
	}
	name, pathInfo, ok := splitPath(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	script, ok := conf.lookup(name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.ContentLength < 0 {
		// A script learns the length of its input from CONTENT_LENGTH.
		http.Error(w, "cgi: a request body needs a Content-Length", http.StatusLengthRequired)
		return
	}
	run := &run{
		gateway:  g,
		conf:     conf,
		name:     name,
		script:   script,
		pathInfo: pathInfo,
		log:      sdk.HostFrom(r.Context()).Logger().With("script", name),
	}
	sdk.CGI(run.serve).ServeHTTP(w, r)
}

// splitPath splits a request path /NAME/extra/path into the script's name
// and the PATH_INFO that follows it ("/extra/path", or "" for /NAME). It
// refuses names that are empty, hidden (beginning with a dot, which
// includes . and ..) or hold a NUL.
func splitPath(p string) (name, pathInfo string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return "", "", false
	}
	name, extra, found := strings.Cut(rest, "/")
	if name == "" || name[0] == '.' || strings.IndexByte(name, 0) >= 0 {
		return "", "", false
	}
	if found {
		pathInfo = "/" + extra
	}
	return name, pathInfo, true
}

// lookup returns the path of script name, when it is a regular file inside
// the directory with an execute bit set. A symbolic link is followed only
// when it resolves to such a file inside the directory.
func (c *config) lookup(name string) (string, bool) {
	p := filepath.Join(c.dir, name)
	if filepath.Dir(p) != c.dir {
		return "", false
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return "", false
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(p)
		if err != nil || !within(c.dir, target) {
			return "", false
		}
		if fi, err = os.Stat(target); err != nil {
			return "", false
		}
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", false
	}
	return p, true
}

// within reports whether path lies inside dir; both are absolute and clean.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// run is one run of a script.
type run struct {
	*gateway
	conf     *config
	name     string // as in the URL
	script   string // dir/NAME
	pathInfo string
	log      *slog.Logger
}

// serve runs the script with the request and copies its standard output,
// as it comes, to out, where the kernel parses it as CGI output.
func (x *run) serve(out io.Writer, r *http.Request) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), x.conf.timeout, errTimeout)
	defer cancel()

	// The script's standard output is a pipe read here, not by an exec
	// goroutine, so that only this goroutine writes to out, and a read
	// deadline can stop reading once the script is gone.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		x.log.Error("cgi: cannot start script", "error", err)
		badGateway(out)
		return
	}
	defer stdout.Close()

	stderr := &lineLogger{log: x.log}
	var killed atomic.Bool // Cancel ran: the script's context ended first
	cmd := exec.CommandContext(ctx, x.script)
	cmd.Dir = x.conf.dir
	cmd.Env = x.env(r)
	if r.ContentLength > 0 {
		cmd.Stdin = io.LimitReader(r.Body, r.ContentLength)
	}
	cmd.Stdout = stdoutW
	cmd.Stderr = stderr
	// The script leads a process group of its own, and a timeout kills the
	// whole group, with whatever the script started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		killed.Store(true)
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = waitDelay
	err = cmd.Start()
	_ = stdoutW.Close() // the script has its own copy
	if err != nil {
		x.log.Error("cgi: cannot start script", "error", err)
		badGateway(out)
		return
	}

	exited := make(chan struct{})
	var waitErr error // set before exited is closed
	var gone atomic.Bool
	go func() {
		defer close(exited)
		waitErr = cmd.Wait()
		// The script is gone, but a process it started may hold its output
		// open: stop reading after waitDelay of silence.
		gone.Store(true)
		_ = stdout.SetReadDeadline(time.Now().Add(waitDelay))
	}()

	written, copyErr := copyOutput(out, stdout, &gone)
	if copyErr != nil {
		// The caller went away: nobody reads the rest.
		cancel()
	}
	_ = stdout.Close() // a script still writing gets EPIPE
	<-exited
	stderr.flush()

	switch {
	case r.Context().Err() != nil:
		x.log.Debug("cgi: the caller went away", "error", context.Cause(r.Context()))
	case killed.Load() && errors.Is(context.Cause(ctx), errTimeout):
		x.log.Warn("cgi: script timed out", "timeout", x.conf.timeout.String(), "output_bytes", written)
		if written == 0 {
			fmt.Fprintf(out, "Status: 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncgi: %s timed out\n", x.name)
			return
		}
		// Part of the answer went out: cut it off, so the client cannot
		// take it for the whole.
		panic(http.ErrAbortHandler)
	case copyErr != nil:
		x.log.Debug("cgi: writing the answer", "error", copyErr)
	case errors.Is(waitErr, exec.ErrWaitDelay):
		x.log.Info("cgi: script exited, leaving a process that holds its output open")
	case waitErr != nil:
		x.log.Warn("cgi: script failed", "error", waitErr, "output_bytes", written)
	}
}

// copyOutput copies the script's output to out until it ends, or, once
// gone is set, until it has been silent for waitDelay, flushing whenever it
// has caught up with the script. It returns the bytes copied and the error
// of a write to out.
func copyOutput(out io.Writer, stdout *os.File, gone *atomic.Bool) (int64, error) {
	buf := make([]byte, 32<<10)
	var written int64
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return written, werr
			}
			written += int64(n)
			if f, ok := out.(http.Flusher); ok && n < len(buf) {
				// The script paused: what it printed so far goes out
				// now rather than when a buffer fills.
				f.Flush()
			}
			if gone.Load() {
				_ = stdout.SetReadDeadline(time.Now().Add(waitDelay))
			}
		}
		if err != nil {
			// io.EOF, or the deadline after the script was gone: either
			// way the output is over.
			return written, nil
		}
	}
}

// badGateway answers 502 as CGI output.
func badGateway(out io.Writer) {
	_, _ = io.WriteString(out, "Status: 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncgi: the script could not be started\n")
}

// lineLogger logs each line a script writes to its standard error. exec's
// copying goroutine is its only writer; flush it once Wait returned.
type lineLogger struct {
	log *slog.Logger
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		switch {
		case i >= 0 && i <= maxLogLine:
			l.emit(l.buf[:i])
			l.buf = l.buf[i+1:]
		case len(l.buf) >= maxLogLine:
			l.emit(l.buf[:maxLogLine])
			l.buf = l.buf[maxLogLine:]
		default:
			if len(l.buf) == 0 {
				l.buf = nil
			}
			return len(p), nil
		}
	}
}

// flush logs a last line that had no newline.
func (l *lineLogger) flush() {
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineLogger) emit(line []byte) {
	l.log.Info("cgi: stderr", "line", string(bytes.TrimSuffix(line, []byte{'\r'})))
}
