package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The scanner walks the TOML syntax tree alongside the Go types of Config,
// found by reflection through the toml struct tags, so the schema it checks
// is the one the decoder fills. It reports what go-toml's decoder reports
// poorly or not at all: every unknown key and type error at once (the decoder
// stops at the first type error), the full key of a problem inside an inline
// table, and a number written where a duration belongs (the decoder stores
// it as nanoseconds, or fails without a position). The decoder, in strict
// mode, stays the authority and the backstop.

var (
	configType   = reflect.TypeFor[Config]()
	durationType = reflect.TypeFor[Duration]()
)

// position is a 1-based line and byte column; the zero value means unknown.
type position struct{ line, col int }

// seg is one part of a key path: a key, or (index >= 0) an array element.
type seg struct {
	key   string
	index int
}

// keyPath locates a value in the document.
type keyPath []seg

func (p keyPath) key(k string) keyPath {
	q := make(keyPath, len(p), len(p)+1)
	copy(q, p)
	return append(q, seg{key: k, index: -1})
}

func (p keyPath) elem(i int) keyPath {
	q := make(keyPath, len(p), len(p)+1)
	copy(q, p)
	return append(q, seg{index: i})
}

// id is an unambiguous map key for p.
func (p keyPath) id() string {
	var b strings.Builder
	for _, s := range p {
		if s.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
			continue
		}
		b.WriteString(strconv.Quote(s.key))
	}
	return b.String()
}

// String renders p as a dotted TOML key, as an operator writes it: array
// indexes are left out, keys that are not bare are quoted.
func (p keyPath) String() string {
	var parts []string
	for _, s := range p {
		if s.index >= 0 {
			continue
		}
		if isBareKey(s.key) {
			parts = append(parts, s.key)
		} else {
			parts = append(parts, strconv.Quote(s.key))
		}
	}
	return strings.Join(parts, ".")
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// index records where each key of a document is.
type index struct {
	lines []int               // offsets at which lines start
	at    map[string]position // keyPath.id -> position of the key (first definition)
	paths map[position]keyPath
}

// has reports whether the document sets p.
func (x *index) has(p keyPath) bool {
	_, ok := x.at[p.id()]
	return ok
}

// near returns the position of p, or of its closest ancestor the document
// names, or the zero position.
func (x *index) near(p keyPath) position {
	for ; len(p) > 0; p = p[:len(p)-1] {
		if pos, ok := x.at[p.id()]; ok {
			return pos
		}
	}
	return position{}
}

func (x *index) offsetPos(off int) position {
	line := sort.Search(len(x.lines), func(i int) bool { return x.lines[i] > off }) // first line after
	return position{line: line, col: off - x.lines[line-1] + 1}
}

func (x *index) note(p keyPath, pos position) {
	id := p.id()
	if _, ok := x.at[id]; !ok {
		x.at[id] = pos
	}
	if _, ok := x.paths[pos]; !ok {
		x.paths[pos] = p
	}
}

type scanner struct {
	index
	source string
	data   []byte
	p      unstable.Parser
	arrays map[string]int // keyPath.id of an array of tables -> elements so far
	errs   []*posError

	table     keyPath      // the current [table]
	tableType reflect.Type // its Go type; nil when nothing under it is checked
}

func newScanner(data []byte, source string) *scanner {
	s := &scanner{
		index: index{
			lines: []int{0},
			at:    map[string]position{},
			paths: map[position]keyPath{},
		},
		source: source,
		data:   data,
		arrays: map[string]int{},
	}
	for i, c := range data {
		if c == '\n' {
			s.lines = append(s.lines, i+1)
		}
	}
	return s
}

// run walks the document and returns its syntax error, or every unknown key
// and type error it found.
func (s *scanner) run() error {
	s.p.Reset(s.data)
	s.tableType = configType
	for s.p.NextExpression() {
		e := s.p.Expression()
		switch e.Kind {
		case unstable.KeyValue:
			s.keyValue(s.table, s.tableType, e)
		case unstable.Table:
			s.header(e, false)
		case unstable.ArrayTable:
			s.header(e, true)
		}
	}
	if err := s.p.Error(); err != nil {
		return s.syntaxError(err)
	}
	return joinSorted(s.errs)
}

func (s *scanner) syntaxError(err error) error {
	var perr *unstable.ParserError
	if errors.As(err, &perr) && perr.Highlight != nil {
		if off := cap(s.data) - cap(perr.Highlight); off >= 0 && off <= len(s.data) {
			return &posError{source: s.source, pos: s.offsetPos(off), msg: perr.Message}
		}
	}
	return &posError{source: s.source, msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

func (s *scanner) posOf(r unstable.Range) position { return s.offsetPos(int(r.Offset)) }

func (s *scanner) errorf(pos position, format string, args ...any) {
	s.errs = append(s.errs, &posError{source: s.source, pos: pos, msg: fmt.Sprintf(format, args...)})
}

// header handles [table] and [[array.of.tables]] headers.
func (s *scanner) header(e *unstable.Node, array bool) {
	s.table, s.tableType = nil, nil
	var p keyPath
	var pos position
	t := configType
	it := e.Key()
	for it.Next() {
		k := it.Node()
		last := it.IsLast()
		pos = s.posOf(k.Raw)
		parent := p
		ct, prob := child(t, string(k.Data))
		p = p.key(string(k.Data))
		s.note(p, pos)
		switch prob {
		case unknownKey:
			s.errorf(pos, "unknown table %q", p.String())
			return
		case notTable:
			s.errorf(pos, "%s: want %s, got a table", parent, describe(t))
			return
		}
		dt := deref(ct)
		switch {
		case dt.Kind() == reflect.Interface || isTableArray(dt):
			// Free-form values may be arrays of tables too; they are only
			// counted, so that positions under them stay right.
			n := s.arrays[p.id()]
			switch {
			case last && array:
				s.arrays[p.id()] = n + 1
				p = p.elem(n)
				s.note(p, pos)
			case dt.Kind() == reflect.Interface:
				if n > 0 {
					p = p.elem(n - 1)
				}
			case last || n == 0:
				s.errorf(pos, "%s: want %s, got a table", p, describe(ct))
				return
			default: // [a.b] after [[a]]: a table in a's last element
				p = p.elem(n - 1)
			}
			if dt.Kind() == reflect.Slice {
				ct = dt.Elem()
			}
		case last && array:
			s.errorf(pos, "%s: want %s, got an array of tables", p, describe(ct))
			return
		}
		t = ct
	}
	switch deref(t).Kind() {
	case reflect.Struct, reflect.Map, reflect.Interface:
		s.table, s.tableType = p, t
	default:
		s.errorf(pos, "%s: want %s, got a table", p, describe(t))
	}
}

// keyValue handles key = value under the table at base, of type t.
func (s *scanner) keyValue(base keyPath, t reflect.Type, kv *unstable.Node) {
	if t == nil {
		return
	}
	p := base
	it := kv.Key()
	for it.Next() {
		k := it.Node()
		pos := s.posOf(k.Raw)
		parent := p
		ct, prob := child(t, string(k.Data))
		p = p.key(string(k.Data))
		s.note(p, pos)
		switch prob {
		case unknownKey:
			s.errorf(pos, "unknown key %q", p.String())
			return
		case notTable:
			s.errorf(pos, "%s: want %s, got a table", parent, describe(t))
			return
		}
		if it.IsLast() {
			s.value(p, ct, kv.Value(), pos)
			return
		}
		if dt := deref(ct); dt.Kind() == reflect.Slice {
			s.errorf(pos, "%s: want %s, got a table", p, describe(ct))
			return
		}
		t = ct
	}
}

// value checks the value v found at p against the Go type t.
func (s *scanner) value(p keyPath, t reflect.Type, v *unstable.Node, keyPos position) {
	pos := keyPos
	if v.Raw.Length > 0 {
		pos = s.posOf(v.Raw)
	}
	t = deref(t)
	if t == durationType {
		if v.Kind != unstable.String {
			s.errorf(pos, "%s: want %s, got %s", p, describe(t), kindName(v.Kind))
			return
		}
		var d Duration
		if err := d.UnmarshalText(v.Data); err != nil {
			s.errorf(pos, "%s: %v", p, err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Interface:
		// Free-form: anything goes, but note where nested keys are.
		switch v.Kind {
		case unstable.Array:
			s.elements(p, t, v, pos)
		case unstable.InlineTable:
			s.members(p, t, v)
		}
		return
	case reflect.String:
		if v.Kind == unstable.String {
			return
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if v.Kind == unstable.Integer {
			return
		}
	case reflect.Bool:
		if v.Kind == unstable.Bool {
			return
		}
	case reflect.Slice:
		if v.Kind == unstable.Array {
			s.elements(p, t.Elem(), v, pos)
			return
		}
	case reflect.Map, reflect.Struct:
		if v.Kind == unstable.InlineTable {
			s.members(p, t, v)
			return
		}
	}
	s.errorf(pos, "%s: want %s, got %s", p, describe(t), kindName(v.Kind))
}

func (s *scanner) elements(p keyPath, elem reflect.Type, v *unstable.Node, pos position) {
	it := v.Children()
	for i := 0; it.Next(); i++ {
		e := it.Node()
		ep := pos
		if e.Raw.Length > 0 {
			ep = s.posOf(e.Raw)
		}
		s.note(p.elem(i), ep)
		s.value(p.elem(i), elem, e, ep)
	}
}

func (s *scanner) members(p keyPath, t reflect.Type, v *unstable.Node) {
	it := v.Children()
	for it.Next() {
		if kv := it.Node(); kv.Kind == unstable.KeyValue {
			s.keyValue(p, t, kv)
		}
	}
}

// decodeError turns an error of go-toml's decoder into ours. The scanner has
// normally reported unknown keys and type errors already; what is left is
// mostly duplicate keys and numbers out of range.
func (s *scanner) decodeError(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]*posError, 0, len(strict.Errors))
		for i := range strict.Errors {
			e := &strict.Errors[i]
			line, col := e.Position()
			pos := position{line, col}
			var key keyPath
			for _, k := range e.Key() {
				key = key.key(k)
			}
			what := "table" // the decoder gives a table's full key
			if !strings.Contains(e.Error(), "table") {
				// but only the last table's part for a key in an inline
				// table: the scanner knows it in full.
				what = "key"
				if p, ok := s.paths[pos]; ok {
					key = p
				}
			}
			name := key.String()
			errs = append(errs, &posError{source: s.source, pos: pos, msg: fmt.Sprintf("unknown %s %q", what, name)})
		}
		return joinSorted(errs)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return &posError{source: s.source, pos: position{line, col}, msg: strings.TrimPrefix(de.Error(), "toml: ")}
	}
	return &posError{source: s.source, msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

type problem int

const (
	fine problem = iota
	unknownKey
	notTable
)

// child returns the type of key k in a value of type t.
func child(t reflect.Type, k string) (reflect.Type, problem) {
	t = deref(t)
	switch t.Kind() {
	case reflect.Interface:
		return t, fine
	case reflect.Map:
		return t.Elem(), fine
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if f.IsExported() && name == k && name != "-" && name != "" {
				return f.Type, fine
			}
		}
		return nil, unknownKey
	}
	return nil, notTable
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func isTableArray(t reflect.Type) bool {
	if t = deref(t); t.Kind() != reflect.Slice {
		return false
	}
	switch deref(t.Elem()).Kind() {
	case reflect.Struct, reflect.Map:
		return true
	}
	return false
}

// describe names what a value of type t is written as in TOML.
func describe(t reflect.Type) string {
	t = deref(t)
	if t == durationType {
		return `a duration such as "30s"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice:
		if isTableArray(t) {
			return "an array of tables"
		}
		if deref(t.Elem()).Kind() == reflect.String {
			return "an array of strings"
		}
		return "an array"
	case reflect.Map:
		if deref(t.Elem()).Kind() == reflect.String {
			return "a table of strings"
		}
		return "a table"
	case reflect.Struct:
		return "a table"
	}
	return "a value"
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "an inline table"
	case unstable.LocalDate:
		return "a date"
	case unstable.LocalTime:
		return "a time"
	case unstable.LocalDateTime, unstable.DateTime:
		return "a date-time"
	}
	return "a " + strings.ToLower(k.String())
}
