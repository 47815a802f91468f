package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Errors of Send, CloseConn and Conns.
var (
	// ErrNoConn: the id names no live connection of the plugin's
	// listeners (it has closed, or it belongs to another plugin).
	ErrNoConn = errors.New("sdk: no such connection")
	// ErrConnFull: the connection's unsent output passed its bound; the
	// kernel dropped it.
	ErrConnFull = errors.New("sdk: connection output full; dropped")
)

// ConnInfo is one live line connection, as Conns lists it.
type ConnInfo struct {
	ID       uint64
	Listener string
	Remote   string
	Since    time.Time
	// State is the session's state as the kernel holds it: what its last
	// answered event left.
	State map[string]string
}

// Send queues data on the line connection id, one of the plugin's
// listeners', after what is queued already; data goes out as it is, so end
// a line with "\r\n". It returns once the kernel has queued it, never
// waiting for the client: a broadcast to a slow reader costs nothing. Send
// reaches any connection, not only the one an event is for (a chat's
// broadcast, a timer's announcement).
func (h *Host) Send(ctx context.Context, id uint64, data []byte) error {
	if h.client == nil {
		return ErrNoKernel
	}
	_, err := h.client.Send(ctx, &proto.SendRequest{ConnId: id, Data: data})
	return connError("send to", id, err)
}

// CloseConn ends the session of the line connection id as Conn.Close does:
// what is queued is written, then the handler's Close runs for it.
func (h *Host) CloseConn(ctx context.Context, id uint64) error {
	if h.client == nil {
		return ErrNoKernel
	}
	_, err := h.client.Close(ctx, &proto.CloseRequest{ConnId: id})
	return connError("close", id, err)
}

// Conns lists the live connections of the plugin's line listeners (of
// listener only, unless it is ""), by id.
func (h *Host) Conns(ctx context.Context, listener string) ([]ConnInfo, error) {
	if h.client == nil {
		return nil, ErrNoKernel
	}
	res, err := h.client.Conns(ctx, &proto.ConnsRequest{Listener: listener}, grpc.MaxCallRecvMsgSize(MaxMessageSize))
	if err != nil {
		return nil, connError("list", 0, err)
	}
	out := make([]ConnInfo, 0, len(res.GetConns()))
	for _, c := range res.GetConns() {
		ci := ConnInfo{
			ID:       c.GetId(),
			Listener: c.GetListener(),
			Remote:   c.GetRemoteAddr(),
			Since:    time.Unix(0, c.GetSinceUnixNano()),
			State:    make(map[string]string, len(c.GetState())),
		}
		for k, v := range c.GetState() {
			ci.State[k] = string(v)
		}
		out = append(out, ci)
	}
	return out, nil
}

func connError(op string, id uint64, err error) error {
	if err == nil {
		return nil
	}
	s, _ := status.FromError(err)
	what := "connections"
	if id != 0 {
		what = fmt.Sprintf("connection %d", id)
	}
	switch s.Code() {
	case codes.NotFound:
		return fmt.Errorf("sdk: %s %s: %w", op, what, ErrNoConn)
	case codes.ResourceExhausted:
		return fmt.Errorf("sdk: %s %s: %w", op, what, ErrConnFull)
	case codes.Canceled:
		return fmt.Errorf("sdk: %s %s: %w", op, what, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("sdk: %s %s: %w", op, what, context.DeadlineExceeded)
	}
	return fmt.Errorf("sdk: %s %s: %w", op, what, err)
}
