package sdk

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
)

type baseKey struct{}

func TestCallCtxValues(t *testing.T) {
	base := context.WithValue(context.Background(), baseKey{}, "from the stream")
	c := newCallCtx(base, 0, newHost("slot", 1, nil, slog.LevelInfo))
	c.listener = "web"
	c.local = localAddr("127.0.0.1:8080")
	if h := HostFrom(c); h != c.host {
		t.Errorf("HostFrom gives %p, want the call's %p", h, c.host)
	}
	if got := ListenerFrom(c); got != "web" {
		t.Errorf("ListenerFrom %q", got)
	}
	if a, _ := c.Value(http.LocalAddrContextKey).(interface{ String() string }); a == nil || a.String() != "127.0.0.1:8080" {
		t.Errorf("local address %v", c.Value(http.LocalAddrContextKey))
	}
	if got := c.Value(baseKey{}); got != "from the stream" {
		t.Errorf("a value of the stream's context: %v", got)
	}
	// Through a child, as a handler that adds values of its own sees them.
	child := context.WithValue(c, baseKey{}, "the handler's")
	if ListenerFrom(child) != "web" || child.Value(baseKey{}) != "the handler's" {
		t.Errorf("through a child: listener %q, value %v", ListenerFrom(child), child.Value(baseKey{}))
	}
	// A derived context ends with the call's, through the promoted
	// AfterFunc.
	derived, cancel := context.WithCancel(c)
	defer cancel()
	c.Cancel(context.Canceled)
	<-derived.Done()
	if ListenerFrom(newCallCtx(base, 0, nil)) != "" {
		t.Error("a call without a listener has one")
	}
}
