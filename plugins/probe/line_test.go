package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestLine(t *testing.T) {
	tp := newTestProbe(t)
	s, greeting := tp.Dial()
	if want := []string{tp.id + " ready"}; !reflect.DeepEqual(greeting, want) {
		t.Fatalf("greeting %q, want %q", greeting, want)
	}
	for i, line := range []string{"hello", "", "héllo wörld"} {
		want := []string{"#" + string(rune('1'+i)) + " " + tp.id + ": " + line}
		if got := s.Send(line); !reflect.DeepEqual(got, want) {
			t.Fatalf("line %q: %q, want %q", line, got, want)
		}
	}
	if got := s.SendTooLong("abc"); !reflect.DeepEqual(got, []string{"#4 " + tp.id + ": line too long (3 bytes kept)"}) {
		t.Fatalf("too long: %q", got)
	}
	if got := s.Send("/slow 1"); !reflect.DeepEqual(got, []string{"#5 " + tp.id + ": /slow 1"}) {
		t.Fatalf("slow: %q", got)
	}
	if got := s.Send("/slow x"); len(got) != 1 || !strings.Contains(got[0], "needs a non-negative number") {
		t.Fatalf("bad slow: %q", got)
	}
	if got := s.Send("/quit"); !reflect.DeepEqual(got, []string{"#7 " + tp.id + ": bye"}) || !s.Closing() {
		t.Fatalf("quit: %q closing %v", got, s.Closing())
	}
	s.CloseFor("closed by handler")
	if tp.Describe.GetLineFailReply() != failReply {
		t.Fatalf("fail reply %q", tp.Describe.GetLineFailReply())
	}
}

// TestLineCountAcrossVersions: a session that moves to another process (a
// swap) keeps its count.
func TestLineCountAcrossVersions(t *testing.T) {
	a, b := newTestProbe(t), newTestProbe(t)
	s, _ := a.Dial()
	s.Send("one")
	s.Send("two")
	s.MoveTo(b.Plugin)
	if got := s.Send("three"); !reflect.DeepEqual(got, []string{"#3 " + b.id + ": three"}) {
		t.Fatalf("after the move: %q", got)
	}
}

func TestLineCrash(t *testing.T) {
	tp := newTestProbe(t)
	s, _ := tp.Dial()
	go s.TrySend("/crash")
	if code := <-tp.exits; code != 2 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(tp.stderr.String(), "crashing on a line") {
		t.Fatalf("stderr %q", tp.stderr.String())
	}
}

func TestTick(t *testing.T) {
	tp := newTestProbe(t)
	for i := uint64(1); i <= 3; i++ {
		if err := tp.Tick("beat", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.Tick("other", 1); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for key, want := range map[string]string{"ticks/beat": "3", "ticks/other": "1"} {
		v, err := tp.Store().Get(ctx, key)
		if err != nil || string(v) != want {
			t.Fatalf("%s = %q, %v; want %q", key, v, err, want)
		}
	}
}
