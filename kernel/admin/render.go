package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// column is one column of a known table: its heading and the JSON field it
// shows.
type column struct{ head, field string }

var (
	pluginColumns = []column{
		{"NAME", "name"}, {"GEN", "generation"}, {"STATE", "state"}, {"PID", "pid"},
		{"VERSION", "version"}, {"INFLIGHT", "inflight"}, {"SERVED", "served"},
		{"ERRORS", "errors"}, {"RESTARTS", "restarts"}, {"ROLLBACKS", "rollbacks"},
		{"LAST_SWAP", "last_swap"}, {"LAST_ERROR", "last_error"},
	}
	listenerColumns = []column{
		{"NAME", "name"}, {"PROTOCOL", "protocol"}, {"ADDRESS", "address"},
		{"PLUGIN", "plugin"}, {"CONNS", "connections"}, {"ACCEPTED", "accepted"},
		{"REQUESTS", "requests"}, {"ERRORS", "errors"}, {"REFUSED", "refused"},
	}
	connColumns = []column{
		{"ID", "id"}, {"LISTENER", "listener"}, {"REMOTE", "remote"},
		{"SINCE", "since"}, {"IN", "bytes_in"}, {"OUT", "bytes_out"},
	}
	timerColumns = []column{
		{"NAME", "name"}, {"PLUGIN", "plugin"}, {"EVERY", "every"}, {"TICKS", "ticks"},
		{"SKIPPED", "skipped"}, {"ERRORS", "errors"}, {"RUNNING", "running"},
		{"NEXT", "next"}, {"LAST_ERROR", "last_error"},
	}
	stateListColumns = []column{{"KEY", "key"}, {"SIZE", "size"}}

	// tables maps the list commands to their columns.
	tables = map[string][]column{
		"plugins":    pluginColumns,
		"listeners":  listenerColumns,
		"conns":      connColumns,
		"timers":     timerColumns,
		"state list": stateListColumns,
	}
)

// Render writes a reply's data for humans, the way `switchyard ctl` shows it
// without -json.
//
// plugins, listeners, conns, timers and state list are aligned tables with
// fixed columns; status is "key: value" lines (uptime as a duration)
// followed by the listeners, plugins and timers tables; reload is "reloaded PLUGIN: generation
// N". Other known commands get generic rendering: a table for a list of
// objects, "key: value" lines for an object, the plain value for a scalar,
// nothing for null. Unknown commands and shapes a command does not expect
// are written as indented JSON. In cells, a missing field, null and the empty
// string show as "-", strings are shown as given (control characters
// escaped), and nothing is cut short. Render fails only on invalid JSON or
// a write error.
func Render(w io.Writer, cmd Command, data json.RawMessage) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && !json.Valid(data) {
		return fmt.Errorf("admin: render %s: reply data is not valid JSON", cmd.Name)
	}
	if _, known := lookup(cmd.Name); !known {
		return indented(w, data)
	}
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	var b bytes.Buffer
	ok := false
	switch cmd.Name {
	case "status":
		ok = renderStatus(&b, data)
	case "reload":
		ok = renderReload(&b, cmd, data)
	default:
		if cols, isTable := tables[cmd.Name]; isTable {
			rows, isRows := objectRows(data)
			ok = isRows && renderTable(&b, "", cols, rows) == nil
		} else {
			ok = renderGeneric(&b, data)
		}
	}
	if !ok {
		return indented(w, data)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// indented writes data as indented JSON.
func indented(w io.Writer, data json.RawMessage) error {
	if len(data) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Indent(&b, data, "", "  "); err != nil {
		return fmt.Errorf("admin: render: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// field is one member of a JSON object, in the order the object has it.
type field struct {
	key   string
	value json.RawMessage
}

// objectFields decodes a JSON object keeping its members in order. It
// reports false when data is not an object.
func objectFields(data json.RawMessage) ([]field, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var fs []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, ok := tok.(string)
		if !ok {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		fs = append(fs, field{key, v})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	return fs, true
}

// get returns the value of key in fs.
func get(fs []field, key string) (json.RawMessage, bool) {
	for _, f := range fs {
		if f.key == key {
			return f.value, true
		}
	}
	return nil, false
}

// objectRows decodes a JSON array of objects. It reports false for anything
// else.
func objectRows(data json.RawMessage) ([][]field, bool) {
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil || elems == nil {
		return nil, false
	}
	rows := make([][]field, 0, len(elems))
	for _, e := range elems {
		fs, ok := objectFields(e)
		if !ok {
			return nil, false
		}
		rows = append(rows, fs)
	}
	return rows, true
}

// newTabwriter returns a writer aligning cells with padding spaces between
// columns.
func newTabwriter(w io.Writer, padding int) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, padding, ' ', 0)
}

// renderTable writes rows under cols, each line prefixed with indent.
func renderTable(w io.Writer, indent string, cols []column, rows [][]field) error {
	tw := newTabwriter(w, 2)
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = c.head
	}
	fmt.Fprintf(tw, "%s%s\n", indent, strings.Join(cells, "\t"))
	for _, row := range rows {
		for i, c := range cols {
			v, ok := get(row, c.field)
			cells[i] = cell(v, ok)
		}
		fmt.Fprintf(tw, "%s%s\n", indent, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// keyValue is one "key: value" line.
type keyValue struct{ key, value string }

// renderKeyValues writes "key: value" lines, the values aligned.
func renderKeyValues(w io.Writer, kvs []keyValue) error {
	tw := newTabwriter(w, 1)
	for _, kv := range kvs {
		fmt.Fprintf(tw, "%s:\t%s\n", clean(kv.key), kv.value)
	}
	return tw.Flush()
}

// cell formats one JSON value for a table cell or a key list.
func cell(v json.RawMessage, present bool) string {
	v = bytes.TrimSpace(v)
	if !present || len(v) == 0 {
		return "-"
	}
	switch v[0] {
	case 'n':
		return "-"
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil || s == "" {
			return "-"
		}
		return clean(s)
	case '{', '[':
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return clean(string(v))
		}
		return clean(b.String())
	default: // numbers as written, true, false
		return clean(string(v))
	}
}

// clean makes s safe for one cell of one line: control characters (tab and
// newline included) are escaped as in a Go string literal and invalid UTF-8
// is replaced.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// renderGeneric renders data by its shape: a table for a list of objects,
// one value a line for a list of scalars, key lines for an object, the plain
// value for a scalar.
func renderGeneric(w io.Writer, data json.RawMessage) bool {
	switch data[0] {
	case '{':
		fs, ok := objectFields(data)
		if !ok {
			return false
		}
		kvs := make([]keyValue, len(fs))
		for i, f := range fs {
			kvs[i] = keyValue{f.key, cell(f.value, true)}
		}
		return renderKeyValues(w, kvs) == nil
	case '[':
		if rows, ok := objectRows(data); ok {
			if len(rows) == 0 {
				return true
			}
			return renderTable(w, "", inferColumns(rows), rows) == nil
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(data, &elems); err != nil {
			return false
		}
		for _, e := range elems {
			if e = bytes.TrimSpace(e); len(e) > 0 && (e[0] == '{' || e[0] == '[') {
				return false // mixed or nested: not a shape we show as lines
			}
			fmt.Fprintln(w, cell(e, true))
		}
		return true
	case '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return false
		}
		fmt.Fprintln(w, s)
		return true
	default:
		fmt.Fprintln(w, string(data))
		return true
	}
}

// inferColumns makes columns of every key in rows, in order of first
// appearance, headed by the key in capitals.
func inferColumns(rows [][]field) []column {
	seen := map[string]bool{}
	var cols []column
	for _, row := range rows {
		for _, f := range row {
			if !seen[f.key] {
				seen[f.key] = true
				cols = append(cols, column{strings.ToUpper(clean(f.key)), f.key})
			}
		}
	}
	return cols
}

// renderStatus writes the status object: the known keys first, then any
// others, then the listeners and plugins tables.
func renderStatus(w io.Writer, data json.RawMessage) bool {
	fs, ok := objectFields(data)
	if !ok {
		return false
	}
	if renderKeyValues(w, statusSummary(fs)) != nil {
		return false
	}
	for _, t := range []struct {
		key  string
		cols []column
	}{{"listeners", listenerColumns}, {"plugins", pluginColumns}, {"timers", timerColumns}} {
		v, _ := get(fs, t.key)
		rows, isRows := objectRows(v)
		if !isRows {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", t.key)
		if renderTable(w, "  ", t.cols, rows) != nil {
			return false
		}
	}
	return true
}

// statusSummary is the status object's "key: value" lines: the known keys
// first, then any others but the tables.
func statusSummary(fs []field) []keyValue {
	var kvs []keyValue
	for _, key := range []string{"version", "pid", "uptime_s", "connections", "config"} {
		v, present := get(fs, key)
		if key == "uptime_s" {
			kvs = append(kvs, keyValue{"uptime", uptime(v, present)})
			continue
		}
		kvs = append(kvs, keyValue{key, cell(v, present)})
	}
	for _, f := range fs {
		switch f.key {
		case "version", "pid", "uptime_s", "connections", "config":
			continue
		case "listeners", "plugins", "timers":
			if _, isRows := objectRows(f.value); isRows {
				continue // a table below
			}
		}
		kvs = append(kvs, keyValue{f.key, cell(f.value, true)})
	}
	return kvs
}

// uptime renders uptime_s, a number of seconds, as a duration like 3h2m1s.
func uptime(v json.RawMessage, present bool) string {
	var secs float64
	if !present || json.Unmarshal(v, &secs) != nil {
		return cell(v, present)
	}
	return time.Duration(secs * float64(time.Second)).Round(time.Second).String()
}

// renderReload writes "reloaded PLUGIN: generation N".
func renderReload(w io.Writer, cmd Command, data json.RawMessage) bool {
	fs, ok := objectFields(data)
	if !ok {
		return false
	}
	gen, ok := get(fs, "generation")
	if gen = bytes.TrimSpace(gen); !ok || len(gen) == 0 || !(gen[0] == '-' || gen[0] >= '0' && gen[0] <= '9') {
		return false
	}
	name := "-"
	if len(cmd.Args) > 0 {
		name = clean(cmd.Args[0])
	}
	_, err := fmt.Fprintf(w, "reloaded %s: generation %s\n", name, gen)
	return err == nil
}
