package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// user is a chat session in a test.
type user struct {
	*sdktest.Session
	t    *testing.T
	nick string
}

// join dials p and, when name is not "", takes it as nick. It forgets
// what the session and the others were sent meanwhile.
func join(t *testing.T, p *sdktest.Plugin, name string, others ...*user) *user {
	t.Helper()
	s, greeting := p.Dial()
	want := []string{welcome, "* you are " + guestNick(s.ID())}
	if !slices.Equal(greeting, want) {
		t.Fatalf("greeting %q, want %q", greeting, want)
	}
	u := &user{Session: s, t: t, nick: guestNick(s.ID())}
	if name != "" {
		u.expect("/nick "+name, "* you are now "+name)
		u.nick = name
	}
	for _, o := range others {
		o.Sent()
	}
	return u
}

// expect sends line and fails the test unless the replies are want.
func (u *user) expect(line string, want ...string) {
	u.t.Helper()
	if got := u.Send(line); !slices.Equal(got, want) {
		u.t.Fatalf("%s: %q: got %q, want %q", u.nick, line, got, want)
	}
}

// got fails the test unless the session was sent want (lines without
// their CR LF) since the last look.
func (u *user) got(want ...string) {
	u.t.Helper()
	var w string
	for _, l := range want {
		w += l + "\r\n"
	}
	if got := u.Sent(); got != w {
		u.t.Errorf("%s was sent %q, want %q", u.nick, got, w)
	}
}

func TestDescribe(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	d := p.Describe
	if d.GetName() != "chat" || d.GetVersion() != "v1" || !slices.Equal(d.GetProtocols(), []string{"line", "timer"}) {
		t.Errorf("Describe = %v", d)
	}
	if d.GetLineFailReply() != "* chat unavailable, try again" {
		t.Errorf("fail reply %q", d.GetLineFailReply())
	}
}

func TestSettingsRefused(t *testing.T) {
	if _, err := sdktest.Start(t, newPlugin("v1"), map[string]any{"motd": "hi"}, sdktest.Options{}); err == nil {
		t.Error("an unknown setting was accepted")
	}
}

func TestChat(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "")
	b := join(t, p, "")
	a.got("* " + b.nick + " joined")
	b.got()

	a.expect("/nick alice", "* you are now alice")
	b.got("* " + a.nick + " is now alice")
	a.nick = "alice"
	c := join(t, p, "carol", a, b)

	a.expect("hello, world")
	a.got()
	b.got("<alice> hello, world")
	c.got("<alice> hello, world")

	b.expect("/me waves")
	a.got("* " + b.nick + " waves")
	c.got("* " + b.nick + " waves")

	c.expect("//slash")
	a.got("<carol> /slash")
	b.got("<carol> /slash")

	c.expect("/who", "* 3 users online: alice, carol, "+b.nick)
	if st := c.State(); st[keyNick] != "carol" {
		t.Errorf("state %q", st)
	}
	b.got()
}

// TestBroadcastOrder: the messages of two senders reach the others in the
// order each sent them.
func TestBroadcastOrder(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "a")
	b := join(t, p, "b", a)
	c := join(t, p, "c", a, b)
	d := join(t, p, "d", a, b, c)
	var toC, toD, toA, toB []string
	for i := range 20 {
		msg := "message " + string(rune('a'+i))
		a.expect(msg)
		b.expect(msg)
		toC = append(toC, "<a> "+msg, "<b> "+msg)
		toA = append(toA, "<b> "+msg)
		toB = append(toB, "<a> "+msg)
	}
	toD = toC
	c.got(toC...)
	d.got(toD...)
	a.got(toA...)
	b.got(toB...)
}

func TestNick(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "alice")
	b := join(t, p, "", a)
	tests := []struct {
		line string
		want string
	}{
		{"/nick", "* usage: /nick NAME"},
		{"/nick alice", "* nick alice is taken"},
		{"/nick ALICE", "* nick ALICE is taken"},
		{"/nick " + a.nick, "* nick alice is taken"},
		{"/nick " + strings.Repeat("x", 33), `* invalid nick "` + strings.Repeat("x", 33) + `": use 1 to 32 letters, digits, - or _`},
		{"/nick b@d", `* invalid nick "b@d": use 1 to 32 letters, digits, - or _`},
		{"/nick bé", `* invalid nick "bé": use 1 to 32 letters, digits, - or _`},
		{"/nick " + guestNick(a.ID()), "* nick " + guestNick(a.ID()) + " is reserved"},
		{"/nick Guest7", "* nick Guest7 is reserved"},
		{"/nick " + b.nick, "* you are already " + b.nick},
		{"/nick " + strings.Repeat("x", 32), "* you are now " + strings.Repeat("x", 32)},
		{"/nick guest_1", "* you are now guest_1"},
		{"/NICK bob-2", "* you are now bob-2"},
		{"/nick Bob-2", "* you are now Bob-2"},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			b.t = t
			b.expect(tc.line, tc.want)
		})
	}
	if st := b.State(); st[keyNick] != "Bob-2" {
		t.Errorf("state %q", st)
	}
	a.got("* "+b.nick+" is now "+strings.Repeat("x", 32), "* "+strings.Repeat("x", 32)+" is now guest_1",
		"* guest_1 is now bob-2", "* bob-2 is now Bob-2")
}

// TestNickFreedOnLeave: the nick of a connection that left may be taken
// at once.
func TestNickFreedOnLeave(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "alice")
	b := join(t, p, "", a)
	a.Close()
	b.expect("/nick alice", "* you are now alice")
}

func TestClaims(t *testing.T) {
	var cl claims
	now := time.Now()
	both := map[uint64]bool{1: true, 2: true}
	steps := []struct {
		name string
		nick string
		conn uint64
		at   time.Duration
		live map[uint64]bool
		ok   bool
	}{
		{"first", "bob", 1, 0, both, true},
		{"same conn again", "bob", 1, 0, both, true},
		{"other conn, other case", "BOB", 2, time.Second, both, false},
		{"first renames", "robert", 1, 2 * time.Second, both, true},
		{"old nick free", "bob", 2, 2 * time.Second, both, true},
		{"new nick claimed", "robert", 2, 3 * time.Second, both, false},
		{"after the ttl", "robert", 2, claimTTL + 3*time.Second, both, true},
		{"claimed again", "carol", 1, claimTTL + 4*time.Second, both, true},
		{"holder gone", "carol", 3, claimTTL + 5*time.Second, map[uint64]bool{3: true}, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if got := cl.claim(st.nick, st.conn, st.live, now.Add(st.at)); got != st.ok {
				t.Errorf("claim %s by %d: %v, want %v", st.nick, st.conn, got, st.ok)
			}
		})
	}
	cl.drop(3)
	if !cl.claim("carol", 2, both, now.Add(claimTTL+6*time.Second)) {
		t.Error("drop kept the claim")
	}
}

func TestQuitAndClose(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "alice")
	b := join(t, p, "bob", a)
	c := join(t, p, "carol", a, b)

	a.expect("/quit", "* bye")
	if !a.Closing() {
		t.Fatal("/quit did not close")
	}
	b.got("* alice left")
	c.got("* alice left")
	if got := a.CloseFor("closed by handler"); len(got) != 0 {
		t.Errorf("close after /quit replied %q", got)
	}
	b.got() // not told twice
	c.got()

	b.Close()
	c.got("* bob left")
	c.expect("/who", "* 1 user online: carol")

	if got, want := c.CloseFor("idle timeout"), []string{"* idle timeout; bye"}; !slices.Equal(got, want) {
		t.Errorf("idle timeout: %q, want %q", got, want)
	}
}

func TestShutdown(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "alice")
	b := join(t, p, "bob", a)
	if got, want := a.CloseFor("shutdown"), []string{"* server shutting down; bye"}; !slices.Equal(got, want) {
		t.Errorf("shutdown: %q, want %q", got, want)
	}
	b.got() // everyone is being closed: no announcements
}

func TestLines(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	a := join(t, p, "alice")
	b := join(t, p, "bob", a)
	tests := []struct {
		line  string
		reply []string
		sent  []string // what bob gets
	}{
		{line: ""},
		{line: "   "},
		{line: "\t"},
		{line: "\x1b\x07", sent: nil},
		{line: "\x1b[2J\x07", sent: []string{"<alice> [2J"}},
		{line: "  padded\t text  ", sent: []string{"<alice> padded  text"}},
		{line: "red \x1b[31mtext", sent: []string{"<alice> red [31mtext"}},
		{line: "/me", reply: []string{"* usage: /me ACTION"}},
		{line: "/help", reply: []string{usage}},
		{line: "/frob x", reply: []string{"* unknown command /frob; commands: /nick NAME, /who, /me ACTION, /quit; a line that begins with // sends one /"}},
		{line: "/", reply: []string{"* unknown command /; commands: /nick NAME, /who, /me ACTION, /quit; a line that begins with // sends one /"}},
		{line: "héllo wörld", sent: []string{"<alice> héllo wörld"}},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			a.t, b.t = t, t
			a.expect(tc.line, tc.reply...)
			b.got(tc.sent...)
		})
	}
}

func TestTick(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	if err := p.Tick("announce", 1); err != nil { // nobody online
		t.Fatal(err)
	}
	a := join(t, p, "alice")
	b := join(t, p, "bob", a)
	c := join(t, p, "carol", a, b)
	if err := p.Tick("announce", 2); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*user{a, b, c} {
		u.got("* 3 users online")
	}
	c.expect("/quit", "* bye") // closing: Send to it fails, and is ignored
	a.Sent()
	b.Sent()
	if err := p.Tick("announce", 3); err != nil {
		t.Fatal(err)
	}
	a.got("* 3 users online") // c is still listed until its Close
	c.got()
}

// TestMove: a connection that moves to another process (a swap) keeps its
// nick, and the new process, which has seen none of the connections, finds
// them all in the kernel.
func TestMove(t *testing.T) {
	p1 := sdktest.New(t, newPlugin("v1"), nil)
	p2 := sdktest.New(t, newPlugin("v2"), nil)
	a := join(t, p1, "alice")
	b := join(t, p2, "bob")
	a.MoveTo(p2)
	a.expect("/who", "* 2 users online: alice, bob")
	a.expect("hi bob")
	b.got("<alice> hi bob")
	b.expect("/nick alice", "* nick alice is taken")
	b.expect("/me waves")
	a.got("* bob waves")
	if st := a.State(); st[keyNick] != "alice" {
		t.Errorf("state %q", st)
	}
}
