package host

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// wedgedPlugin accepts Calls streams and never reads from them, as a stopped
// or deadlocked process would.
type wedgedPlugin struct {
	proto.UnimplementedPluginServer
}

func (wedgedPlugin) Calls(s proto.Plugin_CallsServer) error {
	<-s.Context().Done()
	return s.Context().Err()
}

// TestWedgedPlugin fills the flow-control window of a plugin that reads
// nothing and checks that calls still end at their deadline, and that the
// stream is declared broken.
func TestWedgedPlugin(t *testing.T) {
	t.Parallel()
	c := memClient(t, wedgedPlugin{}, 1)
	body := strings.Repeat("x", 60<<10)
	results := make(chan error, 200)
	for range 200 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			results <- c.ServeHTTP(ctx, httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader(body)), "l")
		}()
	}
	deadline := time.After(maxSendBlock + 5*time.Second)
	for i := range 200 {
		select {
		case err := <-results:
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrUnavailable) {
				t.Errorf("call %d: %v, want a deadline or ErrUnavailable", i, err)
			}
		case <-deadline:
			t.Fatalf("%d calls still blocked on a plugin that reads nothing", 200-i)
		}
	}
	if c.streams[0].usable() {
		t.Error("the stream to a plugin that reads nothing is still in use")
	}
}
