package sdk_test

import (
	"context"
	"reflect"
	"strconv"
	"testing"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// tally numbers the lines of a connection, keeping the count in the
// session's state under key.
type tally struct{ key string }

func (h tally) Open(c *sdk.Conn) { c.Reply("ready") }

func (h tally) Line(c *sdk.Conn, line string) {
	n, _ := strconv.Atoi(c.State[h.key])
	c.State[h.key] = strconv.Itoa(n + 1)
	c.Replyf("#%d %s", n+1, line)
}

func (h tally) Close(*sdk.Conn) {}

// counterV1 kept the count under "n".
func counterV1() sdk.Plugin {
	return sdk.Plugin{Name: "counter", Version: "v1", Line: tally{key: "n"}}
}

// counterV2 keeps it under "count", and converts the sessions that version
// 1 answered last, the first time it meets each.
func counterV2() sdk.Plugin {
	return sdk.Plugin{
		Name:    "counter",
		Version: "v2",
		Line:    tally{key: "count"},
		Migrate: func(_ context.Context, from string, state map[string]string) (map[string]string, error) {
			if n, ok := state["n"]; ok && from == "v1" {
				delete(state, "n")
				state["count"] = n
			}
			return state, nil
		},
	}
}

// TestMigrate: a session that moves from version 1 to version 2, as a swap
// moves it, keeps counting from where version 1 left it, in version 2's key.
// docs/plugins.md quotes counterV2.
func TestMigrate(t *testing.T) {
	v1 := sdktest.New(t, counterV1(), nil)
	v2 := sdktest.New(t, counterV2(), nil)
	s, greeting := v1.Dial()
	if !reflect.DeepEqual(greeting, []string{"ready"}) {
		t.Fatalf("greeting %q", greeting)
	}
	s.Send("a")
	s.Send("b")
	s.MoveTo(v2)
	if got := s.Send("c"); !reflect.DeepEqual(got, []string{"#3 c"}) {
		t.Fatalf("after the move to v2: %q, want #3 c", got)
	}
	if st := s.State(); !reflect.DeepEqual(st, map[string]string{"count": "3"}) {
		t.Fatalf("state after the move: %v", st)
	}
}
