package kernel

import (
	"context"
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/listeners/line"
	"github.com/switchyard-dev/switchyard/state"
)

// A kernel upgrade talks over a UNIX stream socket between the old kernel
// and the new one it started: frames of a 4-byte length and a JSON body,
// each written in one sendmsg with the descriptors it carries (SCM_RIGHTS),
// so that descriptors arrive with the frame that names them.
//
//	old → new  inventory   the listening sockets (passed as inherited
//	                       descriptors) and the connection id counter
//	new → old  ready       plugins started, front ends serving
//	old → new  timers      each timer's schedule, once the old one stopped
//	old → new  conn        one live line session, with its socket
//	old → new  accepted    a connection a socket accepted and no front end
//	                       took yet, with its socket
//	old → new  released    the store and the state directory's lock are
//	                       free: the new kernel opens them
//	new → old  error       the new kernel gives up (before ready)

// upgradeEnv names, in a kernel started by an upgrade, the descriptor of its
// end of the handover socket.
const upgradeEnv = "SWITCHYARD_UPGRADE_FD"

// maxFrame bounds one frame; a session's state and unsent output fit.
const maxFrame = 64 << 20

type frame struct {
	Kind      string               `json:"kind"`
	Inventory *inventory           `json:"inventory,omitempty"`
	Timers    map[string]time.Time `json:"timers,omitempty"`
	Conn      *line.Handover       `json:"conn,omitempty"`
	PID       int                  `json:"pid,omitempty"`
	Listener  string               `json:"listener,omitempty"` // accepted: the listener whose socket accepted it
	Error     string               `json:"error,omitempty"`
}

// inventory is what the old kernel hands over at once.
type inventory struct {
	From      int               `json:"from"` // the old kernel's pid
	Listeners []inheritedSocket `json:"listeners"`
	AdminFD   int               `json:"admin_fd"` // 0: none
	Metrics   *inheritedMetrics `json:"metrics,omitempty"`
	ConnIDs   uint64            `json:"conn_ids"`
}

// inheritedSocket is a listener's socket passed as inherited descriptors.
type inheritedSocket struct {
	Name     string `json:"name"`
	Network  string `json:"network"` // the socket table's: tcp, unix or dns
	Address  string `json:"address"` // as bound
	FD       int    `json:"fd"`
	PacketFD int    `json:"packet_fd,omitempty"` // a DNS listener's UDP socket
}

// handoverConn frames messages on the handover socket. send and recv may
// run concurrently with each other, not with themselves.
type handoverConn struct {
	c  *net.UnixConn
	mu sync.Mutex // one sender at a time
}

func newHandoverConn(f *os.File) (*handoverConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("handover socket is %T, not a UNIX socket", c)
	}
	return &handoverConn{c: uc}, nil
}

// socketPair returns the two ends of a new handover socket, both
// close-on-exec (the child's end is passed by ExtraFiles, which dups it).
func socketPair() (*os.File, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "handover"), os.NewFile(uintptr(fds[1]), "handover-child"), nil
}

func (h *handoverConn) send(f frame, files ...*os.File) error {
	body, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if len(body) > maxFrame {
		return fmt.Errorf("handover frame %s of %d bytes is over %d", f.Kind, len(body), maxFrame)
	}
	buf := make([]byte, 4+len(body))
	be.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = syscall.UnixRights(fds...)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n, _, err := h.c.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		return err
	}
	if n < len(buf) {
		_, err = h.c.Write(buf[n:])
	}
	return err
}

// recv reads one frame and the descriptors sent with it.
func (h *handoverConn) recv() (frame, []*os.File, error) {
	var hdr [4]byte
	oob := make([]byte, syscall.CmsgSpace(4*8))
	n, oobn, _, _, err := h.c.ReadMsgUnix(hdr[:], oob)
	if err != nil {
		return frame{}, nil, err
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		return frame{}, nil, err
	}
	fail := func(err error) (frame, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return frame{}, nil, err
	}
	if n < 4 {
		if _, err := io.ReadFull(h.c, hdr[n:]); err != nil {
			return fail(err)
		}
	}
	size := be.BigEndian.Uint32(hdr[:])
	if size > maxFrame {
		return fail(fmt.Errorf("handover frame of %d bytes is over %d", size, maxFrame))
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(h.c, body); err != nil {
		return fail(err)
	}
	var f frame
	if err := json.Unmarshal(body, &f); err != nil {
		return fail(fmt.Errorf("handover frame: %w", err))
	}
	return f, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "inherited"))
		}
	}
	return files, nil
}

func (h *handoverConn) Close() error { return h.c.Close() }

// lateStore is the store of a kernel started by an upgrade: the old kernel
// holds the store's file lock until it has finished, so calls wait until
// set is called (or their context ends).
type lateStore struct {
	ready chan struct{}
	once  sync.Once
	st    state.Store // set once, before ready is closed
}

var _ state.Store = (*lateStore)(nil)

func newLateStore() *lateStore { return &lateStore{ready: make(chan struct{})} }

func (l *lateStore) set(st state.Store) {
	l.once.Do(func() {
		l.st = st
		close(l.ready)
	})
}

func (l *lateStore) wait(ctx context.Context) (state.Store, error) {
	select {
	case <-l.ready:
		if l.st == nil {
			return nil, errors.New("kernel: the store could not be opened")
		}
		return l.st, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the store the old kernel holds: %w", context.Cause(ctx))
	}
}

func (l *lateStore) Get(ctx context.Context, key string) ([]byte, error) {
	st, err := l.wait(ctx)
	if err != nil {
		return nil, err
	}
	return st.Get(ctx, key)
}

func (l *lateStore) Put(ctx context.Context, key string, value []byte) error {
	st, err := l.wait(ctx)
	if err != nil {
		return err
	}
	return st.Put(ctx, key, value)
}

func (l *lateStore) Delete(ctx context.Context, key string) error {
	st, err := l.wait(ctx)
	if err != nil {
		return err
	}
	return st.Delete(ctx, key)
}

func (l *lateStore) List(ctx context.Context, prefix string) ([]state.Entry, error) {
	st, err := l.wait(ctx)
	if err != nil {
		return nil, err
	}
	return st.List(ctx, prefix)
}

// Close closes the store if it was opened, and fails calls still waiting.
func (l *lateStore) Close() error {
	var err error
	l.once.Do(func() { close(l.ready) })
	if l.st != nil {
		err = l.st.Close()
	}
	return err
}
