package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

const (
	// failReply is what the kernel sends a client when chat cannot answer
	// (it crashed, timed out or is restarting).
	failReply = "* chat unavailable, try again"
	// welcome is the greeting.
	welcome = "* welcome to switchyard chat; /nick NAME to choose a name, /who, /me ACTION, /quit"
	// usage lists the commands.
	usage = "* commands: /nick NAME, /who, /me ACTION, /quit; a line that begins with // sends one /"
	// maxNick is the longest nick.
	maxNick = 32
	// fanout bounds the Sends of one broadcast in flight at once.
	fanout = 8
	// claimTTL is how long a /nick keeps its name for its connection in
	// this process, covering the moment between the check and the kernel
	// applying the new state (see claims).
	claimTTL = 30 * time.Second
)

// The session state keys, the contract between versions of the plugin:
// the next line of a connection may be answered by a newer version after a
// swap, which finds only these.
const (
	// keyNick is the connection's nick; "guestID" until /nick, where ID is
	// the connection's id.
	keyNick = "nick"
	// keyLeft is "1" once the others were told that the connection left
	// (/quit), so that its Close does not tell them again.
	keyLeft = "left"
)

// chat answers chat connections and the chat's timers. Membership, nicks
// and everything else of a connection live in the kernel; the only thing
// of its own is claims. It is safe for concurrent use.
type chat struct {
	claims claims
}

var _ sdk.LineHandler = (*chat)(nil)

func newPlugin(version string) sdk.Plugin {
	ch := &chat{}
	return sdk.Plugin{
		Name:          "chat",
		Version:       version,
		Line:          ch,
		LineFailReply: failReply,
		Tick:          ch.tick,
		Configure:     ch.configure,
	}
}

// settings are chat's [plugins.NAME.settings]: there are none, and any
// key is refused.
type settings struct{}

func (ch *chat) configure(_ context.Context, c sdk.Config) error {
	var s settings
	return c.Decode(&s)
}

// guestNick is the nick a connection starts with.
func guestNick(id uint64) string { return "guest" + strconv.FormatUint(id, 10) }

// nick returns the nick of the connection with this id and state.
func nick(id uint64, state map[string]string) string {
	if n := state[keyNick]; n != "" {
		return n
	}
	return guestNick(id)
}

// Open greets the client, names it guestID and tells the others.
func (ch *chat) Open(c *sdk.Conn) {
	n := guestNick(c.ID)
	c.State[keyNick] = n
	c.Reply(welcome)
	c.Replyf("* you are %s", n)
	ch.announce(c, "* "+n+" joined")
}

// Line answers a command, or sends the line to the others.
func (ch *chat) Line(c *sdk.Conn, line string) {
	line = clean(line)
	if line == "" {
		return
	}
	if text, ok := strings.CutPrefix(line, "//"); ok {
		ch.say(c, "<"+nick(c.ID, c.State)+"> /"+text)
		return
	}
	if !strings.HasPrefix(line, "/") {
		ch.say(c, "<"+nick(c.ID, c.State)+"> "+line)
		return
	}
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch strings.ToLower(cmd) {
	case "/nick":
		ch.setNick(c, arg)
	case "/who":
		ch.who(c)
	case "/me":
		if arg == "" {
			c.Reply("* usage: /me ACTION")
			return
		}
		ch.say(c, "* "+nick(c.ID, c.State)+" "+arg)
	case "/quit":
		c.Reply("* bye")
		c.Close()
		c.State[keyLeft] = "1"
		ch.announce(c, "* "+nick(c.ID, c.State)+" left")
	case "/help":
		c.Reply(usage)
	default:
		c.Replyf("* unknown command %s; %s", cmd, strings.TrimPrefix(usage, "* "))
	}
}

// Close tells the others that the connection left, unless /quit did, or
// the kernel is shutting down and closes them all.
func (ch *chat) Close(c *sdk.Conn) {
	ch.claims.drop(c.ID)
	switch c.Reason {
	case "shutdown":
		c.Reply("* server shutting down; bye")
		return
	case "idle timeout":
		c.Reply("* idle timeout; bye")
	}
	if c.State[keyLeft] == "" {
		ch.announce(c, "* "+nick(c.ID, c.State)+" left")
	}
}

// say sends msg to every other connection, or tells the sender it could
// not.
func (ch *chat) say(c *sdk.Conn, msg string) {
	if err := ch.others(c, msg); err != nil {
		c.Host().Logger().Warn("chat: broadcast", "conn", c.ID, "error", err)
		c.Reply(failReply)
	}
}

// announce sends msg to every other connection; a failure is only logged,
// as the event it announces has happened.
func (ch *chat) announce(c *sdk.Conn, msg string) {
	if err := ch.others(c, msg); err != nil {
		c.Host().Logger().Warn("chat: announcement", "conn", c.ID, "error", err)
	}
}

// others sends msg to every live connection but c.
func (ch *chat) others(c *sdk.Conn, msg string) error {
	ctx, h := c.Context(), c.Host()
	conns, err := h.Conns(ctx, "")
	if err != nil {
		return fmt.Errorf("listing connections: %w", err)
	}
	conns = slices.DeleteFunc(conns, func(ci sdk.ConnInfo) bool { return ci.ID == c.ID })
	return broadcast(ctx, h, conns, msg)
}

// broadcast sends msg and CR LF to each of conns, a few at a time, and
// returns when all are queued: the next event of the sender, and so its
// next message, comes after, which keeps each sender's messages in order.
// A connection that has gone meanwhile, or whose output is full, is
// skipped; other errors are returned together.
func broadcast(ctx context.Context, h *sdk.Host, conns []sdk.ConnInfo, msg string) error {
	data := []byte(msg + "\r\n")
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error // guarded by mu
		sem  = make(chan struct{}, fanout)
	)
	for _, ci := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := send(ctx, h, ci.ID, data)
			if err == nil || errors.Is(err, sdk.ErrNoConn) || errors.Is(err, sdk.ErrConnFull) {
				return
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// send is h.Send, with a panic turned into an error: it runs on a
// goroutine of broadcast's, where the SDK does not recover one.
func send(ctx context.Context, h *sdk.Host, id uint64, data []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("send to connection %d panicked: %v", id, p)
		}
	}()
	return h.Send(ctx, id, data)
}

// setNick renames the connection, if name is a valid nick that no other
// live connection has (ignoring case), and tells the others.
func (ch *chat) setNick(c *sdk.Conn, name string) {
	old := nick(c.ID, c.State)
	switch {
	case name == "":
		c.Reply("* usage: /nick NAME")
		return
	case !validNick(name):
		c.Replyf("* invalid nick %q: use 1 to %d letters, digits, - or _", name, maxNick)
		return
	case name == old:
		c.Replyf("* you are already %s", name)
		return
	case isGuestNick(name) && name != guestNick(c.ID):
		c.Replyf("* nick %s is reserved", name)
		return
	}
	ctx, h := c.Context(), c.Host()
	conns, err := h.Conns(ctx, "")
	if err != nil {
		h.Logger().Warn("chat: listing connections", "conn", c.ID, "error", err)
		c.Reply(failReply)
		return
	}
	live := make(map[uint64]bool, len(conns))
	for _, ci := range conns {
		live[ci.ID] = true
		if ci.ID != c.ID && strings.EqualFold(nick(ci.ID, ci.State), name) {
			c.Replyf("* nick %s is taken", name)
			return
		}
	}
	if !ch.claims.claim(name, c.ID, live, time.Now()) {
		c.Replyf("* nick %s is taken", name)
		return
	}
	c.State[keyNick] = name
	c.Replyf("* you are now %s", name)
	others := slices.DeleteFunc(conns, func(ci sdk.ConnInfo) bool { return ci.ID == c.ID })
	if err := broadcast(ctx, h, others, "* "+old+" is now "+name); err != nil {
		h.Logger().Warn("chat: announcement", "conn", c.ID, "error", err)
	}
}

// validNick reports whether n is 1 to maxNick ASCII letters, digits, '-'
// and '_'.
func validNick(n string) bool {
	if n == "" || len(n) > maxNick {
		return false
	}
	for i := 0; i < len(n); i++ {
		switch c := n[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// isGuestNick reports whether n has the shape of the nick a connection
// starts with ("guest" and digits, in any case): those are reserved for
// their connections.
func isGuestNick(n string) bool {
	rest, ok := cutPrefixFold(n, "guest")
	if !ok || rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return false
		}
	}
	return true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// who answers with the nicks of the live connections, in one line.
func (ch *chat) who(c *sdk.Conn) {
	conns, err := c.Host().Conns(c.Context(), "")
	if err != nil {
		c.Host().Logger().Warn("chat: listing connections", "conn", c.ID, "error", err)
		c.Reply(failReply)
		return
	}
	nicks := make([]string, 0, len(conns)+1)
	self := false
	for _, ci := range conns {
		if ci.ID == c.ID {
			// This event's own changes are not the kernel's yet.
			ci.State = c.State
			self = true
		}
		nicks = append(nicks, nick(ci.ID, ci.State))
	}
	if !self {
		nicks = append(nicks, nick(c.ID, c.State))
	}
	slices.SortFunc(nicks, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	c.Replyf("* %s online: %s", users(len(nicks)), strings.Join(nicks, ", "))
}

// users says how many users there are.
func users(n int) string {
	if n == 1 {
		return "1 user"
	}
	return strconv.Itoa(n) + " users"
}

// tick announces to every live connection how many there are.
func (ch *chat) tick(ctx context.Context, _ sdk.Tick) error {
	h := sdk.HostFrom(ctx)
	conns, err := h.Conns(ctx, "")
	if err != nil {
		return fmt.Errorf("listing connections: %w", err)
	}
	if len(conns) == 0 {
		return nil
	}
	return broadcast(ctx, h, conns, "* "+users(len(conns))+" online")
}

// clean returns line without surrounding spaces, with tabs made spaces and
// other control characters (a telnet client's escape sequences) removed,
// so that no client can drive another's terminal.
func clean(line string) string {
	line = strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, line)
	return strings.TrimSpace(line)
}

// claims holds, for a short while, the nicks that /nick gave in this
// process. The kernel applies a connection's new nick only once its event
// is answered, so two connections that ask for one name at once would both
// find it free in the kernel's list; the claim lets only the first have
// it. It is not membership — that is always the kernel's list — and a
// claim counts only while its connection is live and for claimTTL. The
// zero value is ready; it is safe for concurrent use.
type claims struct {
	mu sync.Mutex
	m  map[string]claim // by lower-case nick; guarded by mu
}

type claim struct {
	conn  uint64
	until time.Time
}

// claim gives name to conn unless another live connection claimed it
// lately, and forgets conn's earlier claims.
func (cl *claims) claim(name string, conn uint64, live map[uint64]bool, now time.Time) bool {
	key := strings.ToLower(name)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.m == nil {
		cl.m = make(map[string]claim)
	}
	for k, c := range cl.m {
		if now.After(c.until) || !live[c.conn] {
			delete(cl.m, k)
		}
	}
	if c, ok := cl.m[key]; ok && c.conn != conn {
		return false
	}
	cl.dropLocked(conn)
	cl.m[key] = claim{conn: conn, until: now.Add(claimTTL)}
	return true
}

// drop forgets conn's claims.
func (cl *claims) drop(conn uint64) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.dropLocked(conn)
}

func (cl *claims) dropLocked(conn uint64) {
	for k, c := range cl.m {
		if c.conn == conn {
			delete(cl.m, k)
		}
	}
}
