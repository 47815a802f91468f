package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Reply is one answer from the server.
type Reply struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error string          `json:"error,omitempty"`
}

// Client talks to a server over one connection. Its methods are safe for
// concurrent use; commands are sent one at a time.
type Client struct {
	path string
	conn net.Conn
	r    *bufio.Reader

	mu     sync.Mutex
	broken error // guarded by mu; set when an exchange was cut off mid-way
}

// Dial connects to the server at path. If nothing listens there, the error
// is a *NoKernelError: it says where it looked and how to start the daemon,
// and wraps the system error (errors.Is(err, fs.ErrNotExist) or
// syscall.ECONNREFUSED).
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, dialError(path, err)
	}
	return &Client{path: path, conn: conn, r: bufio.NewReader(conn)}, nil
}

// NoKernelError is Dial's error when no kernel answers at Path: there is no
// socket there, or a stale one.
type NoKernelError struct {
	Path string
	Err  error // the system error
	// Start is the command the message suggests to start a kernel that
	// answers at Path; "" means "switchyard serve". A caller that knows
	// where Path came from (a flag, a configuration) sets it.
	Start string
}

func (e *NoKernelError) Error() string {
	start := e.Start
	if start == "" {
		start = "switchyard serve"
	}
	return fmt.Sprintf("no switchyard kernel answers at %s (%v); start one with %q", e.Path, e.Err, start)
}

func (e *NoKernelError) Unwrap() error { return e.Err }

func dialError(path string, err error) error {
	var cause error = err
	var se *os.SyscallError
	if errors.As(err, &se) {
		cause = se // "connect: no such file or directory"
	}
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return &NoKernelError{Path: path, Err: cause}
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot reach the switchyard kernel at %s (%w); only the kernel's own user and root may", path, cause)
	default:
		return fmt.Errorf("cannot reach the switchyard kernel at %s: %w", path, err)
	}
}

// Do sends one command line (without its newline) and reads its reply. ctx
// bounds the whole exchange. A Reply with OK false is not an error; err
// reports only that no reply could be had, after which the Client is
// unusable.
func (c *Client) Do(ctx context.Context, line string) (Reply, error) {
	if strings.IndexByte(line, '\n') >= 0 {
		return Reply{}, errors.New("admin: command line contains a newline")
	}
	if len(line) > MaxLine {
		return Reply{}, fmt.Errorf("admin: command line is %d bytes, longer than the %d allowed", len(line), MaxLine)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return Reply{}, c.broken
	}
	rep, err := c.exchange(ctx, line)
	if err != nil {
		err = fmt.Errorf("admin: %s: %w", c.path, ctxCause(ctx, err))
		c.broken = err
	}
	return rep, err
}

// ctxCause returns ctx's error if ctx ended the exchange that failed with
// err. The conn deadline copied from ctx may fire before ctx itself notices.
func ctxCause(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) && errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

func (c *Client) exchange(ctx context.Context, line string) (Reply, error) {
	deadline, _ := ctx.Deadline()
	c.conn.SetDeadline(deadline)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetDeadline(time.Now())
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired // do not let it cut the next exchange short
		}
	}()

	if _, werr := c.conn.Write([]byte(line + "\n")); werr != nil {
		// The server may have refused us and hung up; its reason is
		// already waiting to be read.
		c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if rep, err := c.readReply(); err == nil {
			return rep, nil
		}
		return Reply{}, werr
	}
	return c.readReply()
}

func (c *Client) readReply() (Reply, error) {
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	var rep Reply
	if err := json.Unmarshal(b, &rep); err != nil {
		return Reply{}, fmt.Errorf("malformed reply: %w", err)
	}
	return rep, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}
