package line

import (
	"bytes"
	"unicode/utf8"
)

// Telnet command bytes (RFC 854).
const (
	tnSE   = 240
	tnAYT  = 246
	tnSB   = 250
	tnWILL = 251
	tnWONT = 252
	tnDO   = 253
	tnDONT = 254
	tnIAC  = 255
)

// States of the telnet parser.
const (
	tsData  uint8 = iota // plain data
	tsIAC                // after IAC
	tsWill               // after IAC WILL: the option comes next
	tsWont               // after IAC WONT
	tsDo                 // after IAC DO
	tsDont               // after IAC DONT
	tsSB                 // inside a subnegotiation
	tsSBIAC              // after IAC inside a subnegotiation
)

// ayt answers a telnet Are You There.
const ayt = "[yes]\r\n"

// framer turns the byte stream of one connection into events: Line and
// TooLong, or Block while collecting. It knows no socket: the connection
// feeds it what it reads, in chunks of any size, and the events and the
// telnet answers do not depend on where the chunks split. It keeps only
// the line being read between chunks. It is not safe for concurrent use:
// its connection's goroutine owns it.
type framer struct {
	maxLine int
	telnet  bool
	utf8    bool

	line    []byte // the line read so far; nil when empty between chunks
	discard bool   // the line passed maxLine: drop it up to its LF
	cr      bool   // the last data byte was CR (with telnet, a NUL after it is dropped)

	ts    uint8   // telnet parser state
	sbLen int     // bytes of the current subnegotiation skipped so far
	out   []byte  // telnet answers not yet taken
	one   [1]byte // a single data byte produced by the telnet parser

	col *collecting // non-nil while a block is being collected
}

// collecting is the state of a block being collected.
type collecting struct {
	term     []byte
	unstuff  bool
	max      int64
	data     []byte // the block so far, lines ending in CR LF; nil after overflow
	size     int64  // bytes of the block as they arrived
	overflow bool
	lineLen  int64 // bytes of the current line so far
	cut      bool  // the current line is too long to keep, or to be the terminator
}

// setLimits applies l (with its defaults) from the next chunk on.
func (f *framer) setLimits(l *Limits) {
	f.maxLine, f.telnet, f.utf8 = l.MaxLine, l.Telnet, l.UTF8
	if !f.telnet {
		f.ts = tsData
	}
}

// collect switches to collecting a block as c asks. It is called between
// events, when no line is in progress.
func (f *framer) collect(c Collect) {
	maxBytes := c.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBlock
	}
	f.col = &collecting{term: []byte(c.Terminator), unstuff: c.DotUnstuff, max: maxBytes}
}

// step consumes p up to and including the byte that completes the next
// event, and returns how much it consumed and the event. When p holds no
// complete event, it consumes all of p and ok is false.
func (f *framer) step(p []byte) (n int, ev Event, ok bool) {
	for n < len(p) {
		if f.telnet && f.ts != tsData {
			b := p[n]
			n++
			if d, isData := f.command(b); isData {
				f.one[0] = d
				if ev, ok = f.add(f.one[:]); ok {
					return n, ev, true
				}
			}
			continue
		}
		rest := p[n:]
		i := f.special(rest)
		run := rest
		if i >= 0 {
			run = rest[:i]
		}
		if len(run) > 0 {
			n += len(run)
			if ev, ok = f.add(run); ok {
				return n, ev, true
			}
		}
		if i < 0 {
			continue
		}
		b := rest[i]
		n++
		switch b {
		case '\n':
			if ev, ok = f.eol(); ok {
				return n, ev, true
			}
		case tnIAC:
			f.ts = tsIAC
		case 0:
			// Telnet's CR NUL is a bare CR.
			if f.cr {
				f.cr = false
				continue
			}
			f.one[0] = 0
			if ev, ok = f.add(f.one[:]); ok {
				return n, ev, true
			}
		}
	}
	return n, Event{}, false
}

// special returns the index of the first byte in p that is not plain line
// data (LF; with telnet also IAC and NUL), or -1.
func (f *framer) special(p []byte) int {
	if !f.telnet {
		return bytes.IndexByte(p, '\n')
	}
	for i, b := range p {
		if b == '\n' || b == tnIAC || b == 0 {
			return i
		}
	}
	return -1
}

// command advances the telnet parser by b, which follows an IAC. It
// returns a data byte when the sequence stands for one (IAC IAC).
func (f *framer) command(b byte) (data byte, isData bool) {
	switch f.ts {
	case tsIAC:
		f.ts = tsData
		switch b {
		case tnIAC:
			return tnIAC, true
		case tnWILL:
			f.ts = tsWill
		case tnWONT:
			f.ts = tsWont
		case tnDO:
			f.ts = tsDo
		case tnDONT:
			f.ts = tsDont
		case tnSB:
			f.ts, f.sbLen = tsSB, 0
		case tnAYT:
			f.out = append(f.out, ayt...)
		}
		// NOP, DM, BRK, IP, AO, EC, EL, GA, a stray SE or a byte that is
		// no command: ignored.
	case tsWill:
		// Refuse every option, and answer only requests, never
		// acknowledgements, so that two refusing ends cannot loop.
		f.out = append(f.out, tnIAC, tnDONT, b)
		f.ts = tsData
	case tsDo:
		f.out = append(f.out, tnIAC, tnWONT, b)
		f.ts = tsData
	case tsWont, tsDont:
		f.ts = tsData
	case tsSB, tsSBIAC:
		switch {
		case f.ts == tsSBIAC && b == tnSE:
			f.ts = tsData
			return 0, false
		case f.ts == tsSB && b == tnIAC:
			f.ts = tsSBIAC
		default:
			f.ts = tsSB
		}
		f.sbLen++
		if f.sbLen > f.maxLine {
			// A subnegotiation that never ends must not swallow the
			// session: drop what was skipped and read data again.
			f.ts = tsData
		}
	}
	return 0, false
}

// add takes run, line data without LF, and returns TooLong once the line
// passes maxLine.
func (f *framer) add(run []byte) (Event, bool) {
	f.cr = run[len(run)-1] == '\r'
	if f.discard {
		return Event{}, false
	}
	if f.col != nil {
		f.col.add(f, run)
		return Event{}, false
	}
	have := len(f.line)
	total := have + len(run)
	// One byte past the limit may be the CR of the line's CR LF.
	if total <= f.maxLine || total == f.maxLine+1 && f.cr {
		f.line = append(f.line, run...)
		return Event{}, false
	}
	var data []byte
	if have >= f.maxLine {
		data = f.line[:f.maxLine]
	} else {
		data = append(f.line, run[:f.maxLine-have]...)
	}
	f.line, f.discard = nil, true
	return Event{Kind: TooLong, Data: f.text(data)}, true
}

// eol ends the line at an LF.
func (f *framer) eol() (Event, bool) {
	f.cr = false
	if f.discard {
		f.discard = false
		return Event{}, false
	}
	if f.col != nil {
		return f.col.eol(f)
	}
	line := f.line
	f.line = nil
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > f.maxLine {
		// The limit went down while the line was being read.
		return Event{Kind: TooLong, Data: f.text(line[:f.maxLine])}, true
	}
	return Event{Kind: Line, Data: f.text(line)}, true
}

// text makes b valid UTF-8 when asked to.
func (f *framer) text(b []byte) []byte {
	if f.utf8 && !utf8.Valid(b) {
		return bytes.ToValidUTF8(b, []byte(string(utf8.RuneError)))
	}
	return b
}

// takeOut returns the telnet answers produced so far.
func (f *framer) takeOut() []byte {
	out := f.out
	f.out = nil
	return out
}

// release drops the line buffer when it is empty, so that a connection
// waiting for input holds no memory for it.
func (f *framer) release() {
	if len(f.line) == 0 {
		f.line = nil
	}
}

// add takes line data of the block. The line is kept in f.line while it may
// still fit the block or be the terminator.
func (c *collecting) add(f *framer, run []byte) {
	c.lineLen += int64(len(run))
	if c.cut {
		return
	}
	f.line = append(f.line, run...)
	// A line longer than the terminator and its CR is no terminator: once
	// it cannot fit the block either, it need not be kept.
	if len(f.line) > len(c.term)+1 && (c.overflow || int64(len(c.data)+len(f.line)) > c.max) {
		c.overflow, c.data, c.cut = true, nil, true
		f.line = f.line[:0]
	}
}

// eol ends a line of the block, or the block at its terminator.
func (c *collecting) eol(f *framer) (Event, bool) {
	line, cut, raw := f.line, c.cut, c.lineLen+1
	f.line, c.cut, c.lineLen = f.line[:0], false, 0
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if !cut && bytes.Equal(line, c.term) {
		f.col, f.line = nil, nil
		return Event{Kind: Block, Data: c.data, Overflow: c.overflow, Size: c.size}, true
	}
	c.size += raw
	if c.overflow {
		return Event{}, false
	}
	if c.unstuff && len(line) > 0 && line[0] == '.' {
		line = line[1:]
	}
	if int64(len(c.data)+len(line)+2) > c.max {
		c.overflow, c.data = true, nil
		return Event{}, false
	}
	c.data = append(append(c.data, line...), '\r', '\n')
	return Event{}, false
}
