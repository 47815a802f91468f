package line

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// snapshotFramer frames in[:k] with one framer, takes its state across
// JSON, restores it into a fresh framer with the same limits and frames
// in[k:] there. It returns the events and telnet answers of both halves,
// which must be those of one framer fed all of in.
func snapshotFramer(t testing.TB, lim Limits, collect *Collect, in []byte, k int) (evs []Event, out []byte) {
	t.Helper()
	f := newFramer(lim)
	evs, out = feedFramer(t, f, collect, [][]byte{in[:k]})
	b, err := json.Marshal(f.state())
	if err != nil {
		t.Fatal(err)
	}
	var st FramerState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	g := newFramer(lim)
	if err := g.restore(st); err != nil {
		t.Fatalf("restore %s: %v", b, err)
	}
	if again := g.state(); !sameState(again, st) {
		t.Fatalf("restored state %+v, want %+v", again, st)
	}
	evs2, out2 := feedFramer(t, g, collect, [][]byte{in[k:]})
	return append(evs, evs2...), append(out, out2...)
}

func sameState(a, b FramerState) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestFramerStateEverySplit: for every table case, a framer's state taken
// between any two bytes and restored into a fresh framer frames the rest
// as the first framer would have.
func TestFramerStateEverySplit(t *testing.T) {
	for _, tc := range framerCases {
		t.Run(tc.name, func(t *testing.T) {
			collect := tc.collect
			if collect == nil {
				collect = dataCollect
			}
			in := []byte(strings.Join(tc.chunks, ""))
			whole, wholeOut := runFramer(t, tc.limits, collect, [][]byte{in})
			for k := range len(in) + 1 {
				evs, out := snapshotFramer(t, tc.limits, collect, in, k)
				if !sameEvents(whole, evs) || string(out) != string(wholeOut) {
					t.Fatalf("split at %d: %v %q, want %v %q", k, evs, out, whole, wholeOut)
				}
			}
		})
	}
}

// TestFramerStateStates: each telnet state, a block in progress and a
// discarded line survive the trip; a state no framer can be in is
// refused and changes nothing.
func TestFramerStateStates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lim   Limits
		input string
		check func(FramerState) bool
	}{
		{"iac", Limits{Telnet: true}, "a\xff", func(s FramerState) bool { return s.Telnet == "iac" && string(s.Line) == "a" }},
		{"will", Limits{Telnet: true}, "\xff\xfb", func(s FramerState) bool { return s.Telnet == "will" }},
		{"wont", Limits{Telnet: true}, "\xff\xfc", func(s FramerState) bool { return s.Telnet == "wont" }},
		{"do", Limits{Telnet: true}, "\xff\xfd", func(s FramerState) bool { return s.Telnet == "do" }},
		{"dont", Limits{Telnet: true}, "\xff\xfe", func(s FramerState) bool { return s.Telnet == "dont" }},
		{"sb", Limits{Telnet: true}, "\xff\xfa\x18xy", func(s FramerState) bool { return s.Telnet == "sb" && s.SubLen == 3 }},
		{"sb-iac", Limits{Telnet: true}, "\xff\xfa\x18\xff", func(s FramerState) bool { return s.Telnet == "sb-iac" }},
		{"cr", Limits{Telnet: true}, "a\r", func(s FramerState) bool { return s.CR && string(s.Line) == "a\r" }},
		{"discard", Limits{MaxLine: 4}, "abcdefg", func(s FramerState) bool { return s.Discard && s.Line == nil }},
		{"block", Limits{}, "DATA\r\nx\r\n..y\r\npar", func(s FramerState) bool {
			b := s.Block
			return b != nil && b.Terminator == "." && b.DotUnstuff && b.MaxBytes == DefaultMaxBlock &&
				string(b.Data) == "x\r\n.y\r\n" && b.Size == 8 && b.LineLen == 3 && string(s.Line) == "par"
		}},
		{"block overflow", Limits{}, "DATA\r\n" + strings.Repeat("z", 100), func(s FramerState) bool {
			b := s.Block
			return b != nil && b.Overflow && b.Cut && b.Data == nil && b.LineLen == 100
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			collect := &Collect{Terminator: ".", DotUnstuff: true}
			if tc.name == "block overflow" {
				collect.MaxBytes = 10
			}
			f := newFramer(tc.lim)
			feedFramer(t, f, collect, [][]byte{[]byte(tc.input)})
			if st := f.state(); !tc.check(st) {
				t.Fatalf("state %+v", st)
			}
		})
	}

	f := newFramer(Limits{Telnet: true})
	feedFramer(t, f, dataCollect, [][]byte{[]byte("DATA\nab")})
	before := f.state()
	for _, bad := range []FramerState{
		{Telnet: "bogus"},
		{SubLen: -1},
		{Block: &BlockState{}},
		{Block: &BlockState{Terminator: ".", Size: -1}},
	} {
		if err := f.restore(bad); !errors.Is(err, ErrBadHandover) {
			t.Errorf("restore(%+v) = %v, want ErrBadHandover", bad, err)
		}
		if !sameState(f.state(), before) {
			t.Errorf("a refused restore changed the state to %+v", f.state())
		}
	}

	// Without telnet, a telnet state is dropped, as SetLimits drops it.
	g := newFramer(Limits{})
	if err := g.restore(FramerState{Telnet: "will", Line: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if st := g.state(); st.Telnet != "" || string(st.Line) != "x" {
		t.Errorf("state %+v", st)
	}
}
