package sdk

import (
	"context"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/internal/callctx"
)

// callCtx is the context of one call (see package callctx: one object, no
// timer until something waits for the deadline) with the values the SDK
// puts in it: the Host, the listener, the local address.
type callCtx struct {
	callctx.Ctx
	host     *Host
	listener string // "" when the kernel named none
	local    addr   // its s is "" when the kernel sent none
}

// newCallCtx returns the context of a call that has timeout to run (none
// when it is 0 or less), with values from base, which must never be done.
func newCallCtx(base context.Context, timeout time.Duration, h *Host) *callCtx {
	c := &callCtx{host: h}
	c.Init(base, timeout)
	return c
}

func (c *callCtx) Value(key any) any {
	switch key {
	case hostKey{}:
		if c.host != nil {
			return c.host
		}
	case listenerKey{}:
		if c.listener != "" {
			return c.listener
		}
	case http.LocalAddrContextKey:
		if c.local.s != "" {
			// A pointer into c: handing it out allocates nothing.
			return &c.local
		}
	}
	return c.Ctx.Value(key)
}

func (c *callCtx) String() string { return "sdk.callContext" }
