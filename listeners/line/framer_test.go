package line

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// dataCollect is what runFramer starts collecting after a Line "DATA",
// as an SMTP handler does.
var dataCollect = &Collect{Terminator: ".", DotUnstuff: true}

// framerCase is one table case: chunks fed in order, the events and the
// telnet answers they must give.
type framerCase struct {
	name    string
	limits  Limits
	chunks  []string
	collect *Collect // started after a Line "DATA"; nil means dataCollect
	want    []string // as evString gives them
	out     string   // telnet answers
}

var framerCases = []framerCase{
	{name: "crlf", chunks: []string{"a\r\nb\r\n"}, want: []string{`L "a"`, `L "b"`}},
	{name: "bare lf", chunks: []string{"a\nb\n"}, want: []string{`L "a"`, `L "b"`}},
	{name: "empty lines", chunks: []string{"\n\r\n"}, want: []string{`L ""`, `L ""`}},
	{name: "cr not before lf kept", chunks: []string{"a\rb\na\r\r\n\r\r\n"}, want: []string{`L "a\rb"`, `L "a\r"`, `L "\r"`}},
	{name: "split across chunks", chunks: []string{"he", "llo\r", "\nwor", "ld\n", "\r", "\n"}, want: []string{`L "hello"`, `L "world"`, `L ""`}},
	{name: "partial line at eof", chunks: []string{"a\nbc"}, want: []string{`L "a"`}},
	{name: "too long then recovery", limits: Limits{MaxLine: 4}, chunks: []string{"abcdefgh\nok\n"}, want: []string{`T "abcd"`, `L "ok"`}},
	{name: "too long split", limits: Limits{MaxLine: 4}, chunks: []string{"abc", "defg", "hij\r", "\nok\n"}, want: []string{`T "abcd"`, `L "ok"`}},
	{name: "too long comes before its lf", limits: Limits{MaxLine: 4}, chunks: []string{"abcde"}, want: []string{`T "abcd"`}},
	{name: "exactly max line", limits: Limits{MaxLine: 4}, chunks: []string{"abcd\r\nabcd\n"}, want: []string{`L "abcd"`, `L "abcd"`}},
	{name: "exactly max line split at cr", limits: Limits{MaxLine: 4}, chunks: []string{"abcd\r", "\n"}, want: []string{`L "abcd"`}},
	{name: "cr past max line not before lf", limits: Limits{MaxLine: 4}, chunks: []string{"abcd\r", "x\n"}, want: []string{`T "abcd"`}},
	{name: "cr cr past max line", limits: Limits{MaxLine: 4}, chunks: []string{"abcd\r\r\n"}, want: []string{`T "abcd"`}},
	{name: "iac passes without telnet", chunks: []string{"a\xff\xfb\x01b\n"}, want: []string{`L "a\xff\xfb\x01b"`}},
	{name: "telnet iac iac", limits: Limits{Telnet: true}, chunks: []string{"a\xff\xffb\n"}, want: []string{`L "a\xffb"`}},
	{name: "telnet will do answered", limits: Limits{Telnet: true}, chunks: []string{"\xff\xfb\x01\xff\xfd\x03hi\n"},
		want: []string{`L "hi"`}, out: "\xff\xfe\x01\xff\xfc\x03"},
	{name: "telnet wont dont not answered", limits: Limits{Telnet: true}, chunks: []string{"\xff\xfc\x01h\xff\xfe\x01i\n"}, want: []string{`L "hi"`}},
	{name: "telnet sb skipped", limits: Limits{Telnet: true}, chunks: []string{"a\xff\xfa\x18\x01\xff\xf0b\n"}, want: []string{`L "ab"`}},
	{name: "telnet sb with iac iac", limits: Limits{Telnet: true}, chunks: []string{"\xff\xfa\x18\xff\xff\x01\n\xff\xf0x\n"}, want: []string{`L "x"`}},
	{name: "telnet sb bounded", limits: Limits{Telnet: true, MaxLine: 16}, chunks: []string{"\xff\xfa" + strings.Repeat("z", 20) + "\n"}, want: []string{`L "zzz"`}},
	{name: "telnet split sequences", limits: Limits{Telnet: true},
		chunks: []string{"a\xff", "\xfb", "\x01b\xff", "\xff", "c\xff", "\xfa", "\x18\x01\xff", "\xf0d\n"},
		want:   []string{`L "ab\xffcd"`}, out: "\xff\xfe\x01"},
	{name: "telnet commands ignored", limits: Limits{Telnet: true}, chunks: []string{"a\xff\xf1b\xff\xf9c\xff\xf4\xff\xf5\xff\xf7\xff\xf8\xff\xf3\xff\xf2\xff\xf0\xff\x41d\n"},
		want: []string{`L "abcd"`}},
	{name: "telnet are you there", limits: Limits{Telnet: true}, chunks: []string{"\xff\xf6x\n"}, want: []string{`L "x"`}, out: "[yes]\r\n"},
	{name: "telnet cr nul", limits: Limits{Telnet: true}, chunks: []string{"a\r\x00b\r\n"}, want: []string{`L "a\rb"`}},
	{name: "telnet cr nul split", limits: Limits{Telnet: true}, chunks: []string{"a\r", "\x00b\r", "\x00\n"}, want: []string{`L "a\rb"`}},
	{name: "telnet nul kept", limits: Limits{Telnet: true}, chunks: []string{"a\x00b\n"}, want: []string{`L "a\x00b"`}},
	{name: "cr nul kept without telnet", chunks: []string{"a\r\x00b\n"}, want: []string{`L "a\r\x00b"`}},
	{name: "telnet too long", limits: Limits{Telnet: true, MaxLine: 4}, chunks: []string{"ab\xff\xff\xff\xfb\x01cdef\nok\n"},
		want: []string{`T "ab\xffc"`, `L "ok"`}, out: "\xff\xfe\x01"},
	{name: "utf8 replacement", limits: Limits{UTF8: true}, chunks: []string{"a\xff\xfeb\xc3\nh\xc3\xa9llo\n"},
		want: []string{"L \"a\ufffdb\ufffd\"", `L "héllo"`}},
	{name: "utf8 off", chunks: []string{"a\xff\xfeb\xc3\n"}, want: []string{`L "a\xff\xfeb\xc3"`}},
	{name: "utf8 too long", limits: Limits{UTF8: true, MaxLine: 4}, chunks: []string{"ab\u20acz\n"}, want: []string{"T \"ab\ufffd\""}},
	{name: "utf8 split rune", limits: Limits{UTF8: true}, chunks: []string{"\xe2\x82", "\xac\n"}, want: []string{`L "€"`}},
	{name: "collect dot unstuffed", chunks: []string{"DATA\r\n", "line1\r\n", "..dot\r\n", ".\r\n", "after\r\n"},
		want: []string{`L "DATA"`, `B "line1\r\n.dot\r\n" size=14`, `L "after"`}},
	{name: "collect no unstuffing", collect: &Collect{Terminator: "."}, chunks: []string{"DATA\n..dot\n.\n"},
		want: []string{`L "DATA"`, `B "..dot\r\n" size=6`}},
	{name: "collect bare lf", chunks: []string{"DATA\na\nb\n.\n"}, want: []string{`L "DATA"`, `B "a\r\nb\r\n" size=4`}},
	{name: "collect empty", chunks: []string{"DATA\n.\n"}, want: []string{`L "DATA"`, `B "" size=0`}},
	{name: "collect terminator split", chunks: []string{"DATA\nx\n.", "\r", "\nafter\n"}, want: []string{`L "DATA"`, `B "x\r\n" size=2`, `L "after"`}},
	{name: "collect terminator other", collect: &Collect{Terminator: "END"}, chunks: []string{"DATA\n.\nEND!\nEND\n"},
		want: []string{`L "DATA"`, `B ".\r\nEND!\r\n" size=7`}},
	{name: "collect ignores max line", limits: Limits{MaxLine: 4}, chunks: []string{"DATA\nabcdefgh\n.\nabcdefgh\n"},
		want: []string{`L "DATA"`, `B "abcdefgh\r\n" size=9`, `T "abcd"`}},
	{name: "collect overflow", collect: &Collect{Terminator: ".", MaxBytes: 10}, chunks: []string{"DATA\r\n12345678\r\nx\r\n.\r\nafter\n"},
		want: []string{`L "DATA"`, `B "" size=13 overflow`, `L "after"`}},
	{name: "collect overflow long line", collect: &Collect{Terminator: ".", MaxBytes: 8}, chunks: []string{"DATA\n", strings.Repeat("x", 50), strings.Repeat("y", 50) + "\n.\n"},
		want: []string{`L "DATA"`, `B "" size=101 overflow`}},
	{name: "collect full but not over", collect: &Collect{Terminator: ".", MaxBytes: 10}, chunks: []string{"DATA\n12345678\r\n.\r\n"},
		want: []string{`L "DATA"`, `B "12345678\r\n" size=10`}},
	{name: "collect telnet stripped, no utf8", limits: Limits{Telnet: true, UTF8: true}, chunks: []string{"DATA\na\xff\xff", "b\xff\xfb\x03\xc3\r\x00\r\n.\n"},
		want: []string{`L "DATA"`, `B "a\xffb\xc3\r\r\n" size=7`}, out: "\xff\xfe\x03"},
	{name: "collect after too long", limits: Limits{MaxLine: 4}, chunks: []string{"DATA\nx\n.\n"},
		want: []string{`L "DATA"`, `B "x\r\n" size=2`}},
}

// evString is a compact, comparable form of an event.
func evString(ev Event) string {
	switch ev.Kind {
	case Line:
		return fmt.Sprintf("L %q", ev.Data)
	case TooLong:
		return fmt.Sprintf("T %q", ev.Data)
	case Block:
		s := fmt.Sprintf("B %q size=%d", ev.Data, ev.Size)
		if ev.Overflow {
			s += " overflow"
		}
		return s
	}
	return ev.Kind.String()
}

// runFramer feeds chunks to a framer with limits, starting collect after
// each Line "DATA", and returns the events and the telnet answers. It
// fails t when step does not make progress.
func runFramer(t testing.TB, lim Limits, collect *Collect, chunks [][]byte) (evs []Event, out []byte) {
	t.Helper()
	return feedFramer(t, newFramer(lim), collect, chunks)
}

// newFramer returns a framer with lim (and its defaults).
func newFramer(lim Limits) *framer {
	lim = lim.withDefaults()
	f := &framer{}
	f.setLimits(&lim)
	return f
}

// feedFramer is runFramer with a framer of the caller's.
func feedFramer(t testing.TB, f *framer, collect *Collect, chunks [][]byte) (evs []Event, out []byte) {
	t.Helper()
	for _, ch := range chunks {
		p := ch
		for len(p) > 0 {
			n, ev, ok := f.step(p)
			if n <= 0 || n > len(p) || !ok && n != len(p) {
				t.Fatalf("step(%q) = %d, %v: no progress", p, n, ok)
			}
			p = p[n:]
			out = append(out, f.takeOut()...)
			if !ok {
				continue
			}
			evs = append(evs, ev)
			if ev.Kind == Line && string(ev.Data) == "DATA" {
				f.collect(*collect)
			}
		}
		f.release()
		if len(f.line) == 0 && f.line != nil {
			t.Fatalf("an empty line buffer is held between chunks")
		}
	}
	return evs, out
}

func TestFramer(t *testing.T) {
	for _, tc := range framerCases {
		t.Run(tc.name, func(t *testing.T) {
			collect := tc.collect
			if collect == nil {
				collect = dataCollect
			}
			var chunks [][]byte
			for _, c := range tc.chunks {
				chunks = append(chunks, []byte(c))
			}
			evs, out := runFramer(t, tc.limits, collect, chunks)
			var got []string
			for _, ev := range evs {
				got = append(got, evString(ev))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("events:\n got  %q\n want %q", got, tc.want)
			}
			if string(out) != tc.out {
				t.Errorf("telnet answers %q, want %q", out, tc.out)
			}
			// The same bytes byte by byte give the same events.
			var bytewise [][]byte
			for _, c := range chunks {
				for i := range c {
					bytewise = append(bytewise, c[i:i+1])
				}
			}
			evs2, out2 := runFramer(t, tc.limits, collect, bytewise)
			var got2 []string
			for _, ev := range evs2 {
				got2 = append(got2, evString(ev))
			}
			if !slices.Equal(got2, got) || string(out2) != string(out) {
				t.Errorf("byte by byte: %q %q, in chunks: %q %q", got2, out2, got, out)
			}
		})
	}
}

// TestFramerLimitsChange: a lower MaxLine applies to the line in progress.
func TestFramerLimitsChange(t *testing.T) {
	var f framer
	l := Limits{}.withDefaults()
	f.setLimits(&l)
	if _, _, ok := f.step([]byte("abcdefgh")); ok {
		t.Fatal("event before LF")
	}
	l.MaxLine = 4
	f.setLimits(&l)
	_, ev, ok := f.step([]byte("\n"))
	if !ok || evString(ev) != `T "abcd"` {
		t.Errorf("got %v %s, want TooLong abcd", ok, evString(ev))
	}
	l.Telnet = true
	f.setLimits(&l)
	f.step([]byte("\xff"))
	l.Telnet = false
	f.setLimits(&l)
	if _, ev, ok := f.step([]byte("\xfbx\n")); !ok || evString(ev) != `L "\xfbx"` {
		t.Errorf("telnet state kept after telnet was turned off: %s", evString(ev))
	}
}
