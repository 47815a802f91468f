package line

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzMaxLine and fuzzCollect are small so that random input reaches the
// limits.
const fuzzMaxLine = 16

var fuzzCollect = &Collect{Terminator: ".", DotUnstuff: true, MaxBytes: 64}

// FuzzFraming feeds random bytes to the framer, with telnet on and off
// and UTF-8 on and off, in one chunk and split at random. No input makes
// it panic or stall; Line and TooLong data hold no LF, are at most
// MaxLine bytes of input (made valid UTF-8 with UTF8, which is then the
// only difference) and do not depend on how the input was split, nor on
// a handover at a random byte (the framer's state taken there, across
// JSON, and restored into a fresh framer); Blocks stay within their bound.
func FuzzFraming(f *testing.F) {
	for _, tc := range framerCases {
		f.Add([]byte(strings.Join(tc.chunks, "")), uint64(len(tc.chunks)))
	}
	f.Add([]byte("DATA\r\nhello\r\n..x\r\n.\r\n\xff\xfb\x01\xff\xfa\x18\xff\xf0ok\r\x00\n"), uint64(7))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, seed>>32|1))
		var split [][]byte
		for rest := in; len(rest) > 0; {
			n := 1 + rng.IntN(len(rest))
			split, rest = append(split, rest[:n]), rest[n:]
		}
		handover := rng.IntN(len(in) + 1)
		for _, telnet := range []bool{false, true} {
			var plain []Event
			for _, u := range []bool{false, true} {
				lim := Limits{MaxLine: fuzzMaxLine, Telnet: telnet, UTF8: u}
				whole, wholeOut := runFramer(t, lim, fuzzCollect, [][]byte{in})
				evs, out := runFramer(t, lim, fuzzCollect, split)
				if !sameEvents(whole, evs) || !bytes.Equal(wholeOut, out) {
					t.Fatalf("telnet %v utf8 %v: split %q gives %v %q, whole %v %q", telnet, u, split, evs, out, whole, wholeOut)
				}
				if evs, out := snapshotFramer(t, lim, fuzzCollect, in, handover); !sameEvents(whole, evs) || !bytes.Equal(wholeOut, out) {
					t.Fatalf("telnet %v utf8 %v: a handover at %d gives %v %q, one framer %v %q", telnet, u, handover, evs, out, whole, wholeOut)
				}
				checkEvents(t, evs, u)
				if !u {
					plain = evs
					continue
				}
				// UTF8 changes Line and TooLong data, and nothing else.
				if len(plain) != len(evs) {
					t.Fatalf("telnet %v: %d events with UTF8, %d without", telnet, len(evs), len(plain))
				}
				for i, ev := range plain {
					if ev.Kind == Line || ev.Kind == TooLong {
						ev.Data = bytes.ToValidUTF8(ev.Data, []byte("\uFFFD"))
					}
					if evString(ev) != evString(evs[i]) {
						t.Fatalf("telnet %v: event %d is %s with UTF8, %s without", telnet, i, evString(evs[i]), evString(plain[i]))
					}
				}
			}
		}
	})
}

func sameEvents(a, b []Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if evString(a[i]) != evString(b[i]) {
			return false
		}
	}
	return true
}

func checkEvents(t *testing.T, evs []Event, utf8On bool) {
	t.Helper()
	for _, ev := range evs {
		switch ev.Kind {
		case Line, TooLong:
			if bytes.IndexByte(ev.Data, '\n') >= 0 {
				t.Fatalf("%s holds an LF", evString(ev))
			}
			if !utf8On && len(ev.Data) > fuzzMaxLine {
				t.Fatalf("%s is longer than %d bytes", evString(ev), fuzzMaxLine)
			}
			if ev.Kind == TooLong && !utf8On && len(ev.Data) != fuzzMaxLine {
				t.Fatalf("%s does not hold MaxLine bytes", evString(ev))
			}
			if utf8On && !utf8.Valid(ev.Data) {
				t.Fatalf("%s is not valid UTF-8", evString(ev))
			}
		case Block:
			if int64(len(ev.Data)) > fuzzCollect.MaxBytes || ev.Overflow && len(ev.Data) > 0 {
				t.Fatalf("%s passes its bound", evString(ev))
			}
			if len(ev.Data) > 0 && !bytes.HasSuffix(ev.Data, []byte("\r\n")) {
				t.Fatalf("%s does not end in CR LF", evString(ev))
			}
			if ev.Size < 0 || !ev.Overflow && ev.Size == 0 && len(ev.Data) > 0 {
				t.Fatalf("%s has a wrong size", evString(ev))
			}
		default:
			t.Fatalf("the framer made a %v event", ev.Kind)
		}
	}
}
