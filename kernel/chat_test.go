package kernel

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func chatBin(t testing.TB) string { return bins.Build(t, "chat", "./plugins/chat", "v1") }

const chatConfig = `
[plugins.chat]
path = "plugins/chat"
start_timeout = "10s"

[[listeners]]
name = "chat"
protocol = "line"
address = "127.0.0.1:0"
plugin = "chat"
telnet = true

[[timers]]
name = "announce"
every = "300ms"
plugin = "chat"
`

// chatClient is a chat connection whose lines arrive on a channel.
type chatClient struct {
	*lineClient
	lines chan string
}

func dialChat(t *testing.T, addr string) *chatClient {
	cc := &chatClient{lineClient: dialLine(t, addr), lines: make(chan string, 1000)}
	go func() {
		defer close(cc.lines)
		for {
			cc.c.SetReadDeadline(time.Time{})
			s, err := cc.r.ReadString('\n')
			if err != nil {
				return
			}
			cc.lines <- strings.TrimRight(s, "\r\n")
		}
	}()
	return cc
}

// waitFor reads lines until one satisfies ok, and returns it.
func (cc *chatClient) waitFor(what string, ok func(string) bool) string {
	cc.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s, open := <-cc.lines:
			if !open {
				cc.t.Fatalf("connection closed waiting for %s", what)
			}
			if ok(s) {
				return s
			}
		case <-timeout:
			cc.t.Fatalf("no %s within 20s", what)
		}
	}
}

func (cc *chatClient) say(line string) {
	cc.t.Helper()
	if err := cc.send(line); err != nil {
		cc.t.Fatal(err)
	}
}

// TestChat: three telnet-style clients; each line a client says reaches
// the other two in the order it was said, and the timer's announcement
// reaches all three.
func TestChat(t *testing.T) {
	tk := startKernel(t, chatConfig, map[string]string{"chat": chatBin(t)})
	addr := tk.bound("chat")
	var clients []*chatClient
	for _, nick := range []string{"alice", "bob", "carol"} {
		cc := dialChat(t, addr)
		cc.waitFor("the greeting", func(s string) bool { return strings.HasPrefix(s, "* you are ") })
		cc.say("/nick " + nick)
		cc.waitFor("the new nick", func(s string) bool { return s == "* you are now "+nick })
		clients = append(clients, cc)
	}
	alice, bob, carol := clients[0], clients[1], clients[2]
	carol.say("/who")
	if who := carol.waitFor("/who", func(s string) bool { return strings.Contains(s, "online:") }); !strings.Contains(who, "alice") ||
		!strings.Contains(who, "bob") || !strings.Contains(who, "carol") {
		t.Fatalf("/who answered %q", who)
	}

	// alice and bob talk at once; each receiver sees each sender's lines
	// in order.
	const n = 30
	var wg sync.WaitGroup
	for _, s := range []struct {
		cc     *chatClient
		prefix string
	}{{alice, "a"}, {bob, "b"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= n; i++ {
				if err := s.cc.send(fmt.Sprintf("%s%d", s.prefix, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	expect := func(cc *chatClient, senders map[string]string) {
		t.Helper()
		next := map[string]int{}
		for k := range senders {
			next[k] = 1
		}
		for done := 0; done < len(senders); {
			s := cc.waitFor("a broadcast line", func(s string) bool { return strings.HasPrefix(s, "<") })
			nick, text, _ := strings.Cut(strings.TrimPrefix(s, "<"), "> ")
			prefix, ok := senders[nick]
			if !ok {
				t.Fatalf("unexpected line %q", s)
			}
			if want := fmt.Sprintf("%s%d", prefix, next[nick]); text != want {
				t.Fatalf("from %s got %q, want %q: order not kept", nick, text, want)
			}
			if next[nick]++; next[nick] > n {
				done++
			}
		}
	}
	expect(carol, map[string]string{"alice": "a", "bob": "b"})
	expect(alice, map[string]string{"bob": "b"})
	expect(bob, map[string]string{"alice": "a"})

	// The timer's announcement reaches everyone.
	for _, cc := range clients {
		cc.waitFor("the timer's announcement", func(s string) bool { return s == "* 3 users online" })
	}
	if ts := tk.k.Timers(); len(ts) != 1 || ts[0].Last == "" {
		t.Fatalf("timers %+v", ts)
	}

	// One leaves; the others hear of it, and the next announcement counts
	// two.
	carol.say("/quit")
	carol.waitFor("bye", func(s string) bool { return s == "* bye" })
	alice.waitFor("carol leaving", func(s string) bool { return s == "* carol left" })
	bob.waitFor("two online", func(s string) bool { return s == "* 2 users online" })
}
