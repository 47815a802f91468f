package line

import (
	"bytes"
	"fmt"
)

// FramerState is a framer's state between two bytes of input: what it
// holds of the line being read and of the block being collected, and
// where it is in a telnet sequence. Restored into a framer with the same
// Limits, the input that follows is framed, and answered, exactly as it
// would have been. Limits are not part of it: they belong to the server
// that frames. Every field encodes with encoding/json.
type FramerState struct {
	// Line is the line read so far, without its LF (a CR at its end is
	// kept until the LF comes). While a block is collected it is the
	// block's current line, as far as it is kept (see BlockState.Cut).
	Line []byte
	// Discard: the line passed Limits.MaxLine (its TooLong event was
	// dispatched) and the rest of it is dropped up to its LF.
	Discard bool
	// CR: the last data byte was a CR, so that with telnet a NUL next is
	// dropped (CR NUL is a bare CR).
	CR bool
	// Telnet is where the telnet parser is: "" in plain data, else one of
	// "iac" (after IAC), "will", "wont", "do", "dont" (after IAC and that
	// verb: the option comes next), "sb" (inside a subnegotiation) and
	// "sb-iac" (after IAC inside one).
	Telnet string
	// SubLen counts the bytes of the current subnegotiation skipped so
	// far (it is bounded by Limits.MaxLine).
	SubLen int
	// Block is the block being collected, nil when none is.
	Block *BlockState
}

// BlockState is a block being collected (see Reply.Collect).
type BlockState struct {
	Terminator string
	DotUnstuff bool
	MaxBytes   int64  // the bound in force (DefaultMaxBlock when Collect set none)
	Data       []byte // the block so far, lines ending in CR LF; empty once Overflow
	Size       int64  // bytes of the block as they arrived, its current line excluded
	Overflow   bool   // the block passed MaxBytes: the rest is read and dropped
	LineLen    int64  // bytes of the current line so far, as they arrived
	Cut        bool   // the current line is too long to be kept, or to be the terminator
}

// telnetStates names the telnet parser's states in a FramerState.
var telnetStates = [...]string{
	tsData:  "",
	tsIAC:   "iac",
	tsWill:  "will",
	tsWont:  "wont",
	tsDo:    "do",
	tsDont:  "dont",
	tsSB:    "sb",
	tsSBIAC: "sb-iac",
}

// state returns the framer's state. It is called between two steps, once
// the telnet answers have been taken; the state shares no memory with the
// framer.
func (f *framer) state() FramerState {
	st := FramerState{
		Line:    bytes.Clone(f.line),
		Discard: f.discard,
		CR:      f.cr,
		Telnet:  telnetStates[f.ts],
		SubLen:  f.sbLen,
	}
	if len(st.Line) == 0 {
		st.Line = nil
	}
	if c := f.col; c != nil {
		st.Block = &BlockState{
			Terminator: string(c.term),
			DotUnstuff: c.unstuff,
			MaxBytes:   c.max,
			Data:       bytes.Clone(c.data),
			Size:       c.size,
			Overflow:   c.overflow,
			LineLen:    c.lineLen,
			Cut:        c.cut,
		}
	}
	return st
}

// restore sets the framer's state to st, keeping its limits (set them
// first). It changes nothing when st is not a state a framer can be in.
func (f *framer) restore(st FramerState) error {
	ts := -1
	for i, name := range telnetStates {
		if name == st.Telnet {
			ts = i
		}
	}
	if ts < 0 {
		return fmt.Errorf("%w: unknown telnet state %q", ErrBadHandover, st.Telnet)
	}
	if st.SubLen < 0 {
		return fmt.Errorf("%w: negative subnegotiation length", ErrBadHandover)
	}
	var col *collecting
	if b := st.Block; b != nil {
		if b.Terminator == "" {
			return fmt.Errorf("%w: a block without a terminator", ErrBadHandover)
		}
		if b.Size < 0 || b.LineLen < 0 {
			return fmt.Errorf("%w: negative block size", ErrBadHandover)
		}
		maxBytes := b.MaxBytes
		if maxBytes <= 0 {
			maxBytes = DefaultMaxBlock
		}
		col = &collecting{
			term:     []byte(b.Terminator),
			unstuff:  b.DotUnstuff,
			max:      maxBytes,
			data:     bytes.Clone(b.Data),
			size:     b.Size,
			overflow: b.Overflow,
			lineLen:  b.LineLen,
			cut:      b.Cut,
		}
		if col.overflow {
			col.data = nil
		}
	}
	f.line = bytes.Clone(st.Line)
	if len(f.line) == 0 {
		f.line = nil
	}
	f.discard, f.cr = st.Discard, st.CR
	f.ts, f.sbLen = uint8(ts), st.SubLen
	if !f.telnet {
		f.ts = tsData
	}
	f.out = nil
	f.col = col
	return nil
}
