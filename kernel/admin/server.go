package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/internal/accept"
)

// Handler runs commands for the server. The kernel implements it.
//
// Handle is called from one goroutine per connection, so calls for different
// connections run concurrently; calls for one connection never overlap. cmd
// has been through Parse: its name is known and its arity right. ctx is the
// context given to Serve; the server never cancels a command itself, and a
// command in flight when the server stops runs to completion and its reply
// is written (this is how `shutdown` is answered before the kernel exits).
// When ending ctx is what stops the server, a running command sees it ended.
// Handle must not wait for Serve to return. The result is marshalled with encoding/json as
// the reply's "data"; an error becomes {"ok":false,"error":err.Error()}. A
// panic in Handle is recovered and answered as an error.
type Handler interface {
	Handle(ctx context.Context, cmd Command) (any, error)
}

// defaultWriteTimeout bounds writing one reply, so a client that stops
// reading cannot hold up shutdown forever.
const defaultWriteTimeout = 10 * time.Second

// auditMax is how much of a command line the log shows.
const auditMax = 256

// errLineTooLong reports a command line longer than MaxLine.
var errLineTooLong = fmt.Errorf("admin: command line longer than %d bytes", MaxLine)

// Server answers admin commands on a listener. Create it with NewServer; it
// serves one listener, once.
type Server struct {
	h            Handler
	log          *slog.Logger
	allow        func(uid uint32) bool // whether a peer uid may talk to us
	writeTimeout time.Duration

	stop     chan struct{} // closed by Close
	stopOnce sync.Once

	mu       sync.Mutex
	serving  bool                  // guarded by mu; Serve has been called
	stopping bool                  // guarded by mu; no new command starts
	conns    map[net.Conn]struct{} // guarded by mu; live connections
}

// NewServer returns a server that runs commands with h and logs to log (nil
// discards). Only peers running as the process's effective uid or as root
// are served.
func NewServer(h Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	self := uint32(os.Geteuid())
	return &Server{
		h:            h,
		log:          log,
		allow:        func(uid uint32) bool { return allowedPeer(uid, self) },
		writeTimeout: defaultWriteTimeout,
		stop:         make(chan struct{}),
		conns:        make(map[net.Conn]struct{}),
	}
}

// allowedPeer reports whether a peer running as uid may use the socket of a
// daemon running as self: only the same uid and root may.
func allowedPeer(uid, self uint32) bool {
	return uid == self || uid == 0
}

// Close makes Serve stop as if its context had ended: it stops accepting,
// lets running commands write their replies, closes every connection and
// removes the socket. Close does not wait; Serve returns when all that is
// done. Close may be called from a Handler, before Serve and more than once.
func (s *Server) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	return nil
}

// Serve accepts connections on ln until ctx is done or Close is called, and
// serves each on its own goroutine.
//
// Then it stops accepting, lets every connection finish the command it is
// running and write that reply, closes all connections, removes the socket
// file if ln came from Listen and the file is still the socket Listen made,
// and returns once every goroutine it started has exited. A graceful stop
// returns nil; an accept error that is not temporary stops the server the
// same way and is returned. Serve may be called only once.
//
// Mutating commands are logged at Info ("admin command" with cmd, uid and
// pid) as an audit trail, other commands at Debug, and failing or refused
// commands at Warn.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("admin: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	var wg sync.WaitGroup
	acceptDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-acceptDone:
		}
		stopAccepting(ln)
	}()

	serveErr := s.acceptLoop(ctx, ln, &wg)
	close(acceptDone)

	s.mu.Lock()
	s.stopping = true
	for c := range s.conns {
		// Wake connections idle in Read; one running a command notices
		// stopping after its reply is written.
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	wg.Wait()

	if sl, ok := ln.(*socketListener); ok {
		sl.removeSocket()
	}
	return serveErr
}

// acceptLoop accepts connections until the server is told to stop or Accept
// fails for good. It starts one goroutine per connection, counted in wg.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.stopRequested(ctx) {
				return nil
			}
			if !accept.Temporary(err) {
				return fmt.Errorf("admin: accept: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("admin accept failed; retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			case <-s.stop:
				t.Stop()
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

func (s *Server) stopRequested(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *Server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// stopAccepting closes ln so that Accept returns. The socket file of a
// Listen listener stays until Serve has finished.
func stopAccepting(ln net.Listener) {
	if sl, ok := ln.(*socketListener); ok {
		sl.UnixListener.Close()
		return
	}
	ln.Close()
}

// serveConn checks the peer and then answers its commands in order until it
// hangs up, the server stops, or a write fails. It closes the connection.
func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
	}()

	uid, pid, err := peerCred(nc)
	if err != nil {
		s.log.Warn("admin connection refused", "err", err)
		s.writeReply(nc, wireReply{Error: err.Error()})
		return
	}
	if !s.allow(uid) {
		err := fmt.Errorf("admin: uid %d may not use this socket; only the daemon's own user and root may", uid)
		s.log.Warn("admin connection refused", "uid", uid, "pid", pid, "err", err)
		s.writeReply(nc, wireReply{Error: err.Error()})
		return
	}

	r := bufio.NewReaderSize(nc, 64<<10)
	for !s.isStopping() {
		line, err := readLine(r)
		if errors.Is(err, errLineTooLong) {
			s.log.Warn("admin command rejected", "uid", uid, "pid", pid, "err", err)
			s.writeReply(nc, wireReply{Error: err.Error()})
			return
		}
		if err != nil {
			return // hung up, or woken because the server stops
		}
		if !s.run(ctx, nc, line, uid, pid) {
			return
		}
	}
}

// readLine reads one line without its newline. A last line the peer ended
// with EOF instead of a newline counts as a line. A line longer than MaxLine
// is errLineTooLong; it is not read to its end.
func readLine(r *bufio.Reader) (string, error) {
	var buf []byte
	for {
		frag, err := r.ReadSlice('\n')
		n := len(buf) + len(frag)
		if (err == nil && n > MaxLine+1) || (err != nil && n > MaxLine) {
			return "", errLineTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			return string(buf[:len(buf)-1]), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return string(buf), nil
		default:
			return "", err
		}
	}
}

// run parses and runs one command line and writes its reply. It reports
// whether the reply was written.
func (s *Server) run(ctx context.Context, nc net.Conn, line string, uid uint32, pid int32) bool {
	cmd, err := Parse(line)
	if err != nil {
		s.log.Warn("admin command rejected", "uid", uid, "pid", pid, "err", err)
		return s.writeReply(nc, wireReply{Error: err.Error()})
	}
	attrs := []any{"cmd", auditString(cmd), "uid", uid, "pid", pid}
	if cmd.Mutating() {
		s.log.Info("admin command", attrs...)
	} else {
		s.log.Debug("admin command", attrs...)
	}
	data, err := s.call(ctx, cmd)
	if err != nil {
		s.log.Warn("admin command failed", append(attrs, "err", err)...)
		msg := err.Error()
		if msg == "" {
			msg = cmd.Name + " failed"
		}
		return s.writeReply(nc, wireReply{Error: msg})
	}
	return s.writeReply(nc, wireReply{OK: true, Data: data})
}

// call runs the handler, turning a panic into an error.
func (s *Server) call(ctx context.Context, cmd Command) (data any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("admin handler panicked", "cmd", cmd.Name, "panic", p, "stack", string(debug.Stack()))
			data, err = nil, fmt.Errorf("admin: internal error: %s panicked: %v", cmd.Name, p)
		}
	}()
	return s.h.Handle(ctx, cmd)
}

// wireReply is a reply as the server writes it.
type wireReply struct {
	OK    bool   `json:"ok"`
	Data  any    `json:"data,omitempty"`
	Error string `json:"error,omitempty"`
}

// writeReply writes r as one line of JSON and reports whether it was
// written. Data that cannot be marshalled becomes an error reply.
func (s *Server) writeReply(nc net.Conn, r wireReply) bool {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		s.log.Warn("admin reply not encodable", "err", err)
		b.Reset()
		enc.Encode(wireReply{Error: "admin: encode reply: " + err.Error()})
	}
	nc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	if _, err := nc.Write(b.Bytes()); err != nil {
		s.log.Debug("admin reply not written", "err", err)
		return false
	}
	return true
}

// auditString is the command as the log shows it: whole when short, cut at a
// rune boundary with its length otherwise (a state put VALUE may be 1 MiB).
func auditString(cmd Command) string {
	line := cmd.String()
	if len(line) <= auditMax {
		return line
	}
	cut := auditMax
	for cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", line[:cut], len(line))
}
