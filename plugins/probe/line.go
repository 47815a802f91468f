package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// failReply is what the kernel sends a line client when probe cannot
// answer (it crashed, timed out or is restarting).
const failReply = "ERR probe unavailable"

// probeLine answers line connections: each line L with "#N probe VERSION
// pid PID: L", where N counts the connection's lines from 1 in its session
// state, so it keeps counting across swaps and crashes. Three lines are
// commands: "/quit" answers and closes, "/crash" makes the process exit
// without answering, and "/slow MS" answers after MS milliseconds (or
// never, when the kernel gives up first).
type probeLine struct{ p *probe }

var (
	_ sdk.LineHandler    = probeLine{}
	_ sdk.TooLongHandler = probeLine{}
)

// Open greets with "probe VERSION pid PID ready".
func (l probeLine) Open(c *sdk.Conn) {
	c.State["n"] = "0"
	c.Replyf("%s ready", l.p.id())
}

func (l probeLine) Line(c *sdk.Conn, line string) {
	n := l.count(c)
	switch cmd, arg, _ := strings.Cut(line, " "); cmd {
	case "/quit":
		c.Replyf("#%d %s: bye", n, l.p.id())
		c.Close()
		return
	case "/crash":
		fmt.Fprintf(l.p.stderr, "%s: crashing on a line\n", l.p.id())
		l.p.exit(2)
	case "/slow":
		ms, err := strconv.Atoi(arg)
		if err != nil || ms < 0 {
			c.Replyf("#%d %s: /slow MS needs a non-negative number", n, l.p.id())
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-c.Context().Done():
			return
		}
	}
	c.Replyf("#%d %s: %s", n, l.p.id(), line)
}

// TooLong counts the line and says it was too long.
func (l probeLine) TooLong(c *sdk.Conn, prefix string) {
	n := l.count(c)
	c.Replyf("#%d %s: line too long (%d bytes kept)", n, l.p.id(), len(prefix))
}

func (l probeLine) Close(*sdk.Conn) {}

// count adds one to the connection's line count and returns it.
func (l probeLine) count(c *sdk.Conn) int {
	n, _ := strconv.Atoi(c.State["n"])
	n++
	c.State["n"] = strconv.Itoa(n)
	return n
}

// tick counts the ticks of each timer in the shared store, under
// ticks/NAME, and logs the latest.
func (p *probe) tick(ctx context.Context, t sdk.Tick) error {
	host := sdk.HostFrom(ctx)
	key := "ticks/" + t.Name
	n := 0
	switch v, err := host.Get(ctx, key); {
	case err == nil:
		n, _ = strconv.Atoi(string(v))
	case !errors.Is(err, sdk.ErrNotFound):
		return err
	}
	n++
	if err := host.Put(ctx, key, []byte(strconv.Itoa(n))); err != nil {
		return err
	}
	host.Logger().Debug("tick", "timer", t.Name, "count", t.Count, "skipped", t.Skipped, "stored", n, "probe", p.id())
	return nil
}
