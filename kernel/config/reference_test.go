package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// referencePath is the configuration reference, from this package's
// directory.
var referencePath = filepath.Join("..", "..", "docs", "config.md")

// docSection is the part of the configuration a heading of docs/config.md
// documents: a table key path such as "admin", "plugins.NAME" or
// "listeners", and for listeners the protocol ("" for the keys common to
// every protocol).
type docSection struct {
	table, protocol string
}

func (s docSection) String() string {
	if s.protocol != "" {
		return fmt.Sprintf("[[%s]] protocol = %q", s.table, s.protocol)
	}
	return "[" + s.table + "]"
}

// docRow is one key of the reference: a table row whose first cell is the
// key in backquotes.
type docRow struct {
	section docSection
	key     string
	def     string // the default cell
	line    int
}

// reference is what docs/config.md says: its key rows and TOML examples.
type reference struct {
	rows     []docRow
	examples []docExample
}

type docExample struct {
	line int
	text string
}

// readReference parses docs/config.md. Headings "## [TABLE]",
// "## [[TABLE]]" and "### protocol = \"P\"" (under [[listeners]]) open a
// section; any other heading closes it. A row of a key table outside a
// section is an error.
func readReference(t *testing.T) reference {
	t.Helper()
	data, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("the configuration reference: %v", err)
	}
	var ref reference
	var sec *docSection
	var example *docExample
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case example != nil:
			if line == "```" {
				ref.examples = append(ref.examples, *example)
				example = nil
			} else {
				example.text += line + "\n"
			}
		case line == "```toml":
			example = &docExample{line: n}
		case strings.HasPrefix(line, "#"):
			heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
			if p, ok := strings.CutPrefix(heading, "protocol = "); ok && sec != nil && sec.table == "listeners" {
				sec = &docSection{table: "listeners", protocol: strings.Trim(p, `"`)}
				continue
			}
			if strings.HasPrefix(heading, "[") && strings.HasSuffix(heading, "]") {
				sec = &docSection{table: strings.Trim(heading, "[]")}
				continue
			}
			sec = nil
		case strings.HasPrefix(line, "| `"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) != 4 {
				t.Errorf("%s:%d: a key row has %d cells, want 4 (key, type, default, meaning)", referencePath, n, len(cells))
				continue
			}
			if sec == nil {
				t.Errorf("%s:%d: key row outside a [table] section", referencePath, n)
				continue
			}
			ref.rows = append(ref.rows, docRow{
				section: *sec,
				key:     strings.Trim(strings.TrimSpace(cells[0]), "`"),
				def:     strings.TrimSpace(cells[2]),
				line:    n,
			})
		}
	}
	if example != nil {
		t.Errorf("%s:%d: unterminated ```toml block", referencePath, example.line)
	}
	return ref
}

// schemaKeys lists the keys the decoder fills, as dotted paths from the
// document's root ("plugins.NAME.path", "listeners.max_body"): it follows
// the toml tags through structs, maps of structs (their keys become NAME)
// and arrays of tables. Every other field is a key.
func schemaKeys(t reflect.Type, prefix string, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct:
			schemaKeys(ft, prefix+name+".", out)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Pointer && ft.Elem().Elem().Kind() == reflect.Struct:
			schemaKeys(ft.Elem().Elem(), prefix+name+".NAME.", out)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Pointer && ft.Elem().Elem().Kind() == reflect.Struct:
			schemaKeys(ft.Elem().Elem(), prefix+name+".", out)
		default:
			out[prefix+name] = ft
		}
	}
}

// TestReferenceKeys: docs/config.md documents every key of the Config
// struct, in the table it belongs to, and no other key; every listener key
// that applies to some protocols only is listed under exactly those
// protocols.
func TestReferenceKeys(t *testing.T) {
	ref := readReference(t)
	schema := map[string]reflect.Type{}
	schemaKeys(configType, "", schema)
	if len(schema) < 30 {
		t.Fatalf("the schema walk found %d keys; it no longer follows the Config struct", len(schema))
	}

	documented := map[string][]docSection{} // full key -> sections listing it
	for _, r := range ref.rows {
		full := r.section.table + "." + r.key
		if slices.Contains(documented[full], r.section) {
			t.Errorf("%s:%d: %s is documented twice in %s", referencePath, r.line, r.key, r.section)
		}
		documented[full] = append(documented[full], r.section)
		if _, ok := schema[full]; !ok {
			t.Errorf("%s:%d: %s documents %q, which the configuration does not have", referencePath, r.line, r.section, r.key)
		}
		if r.section.protocol != "" && !slices.Contains(knownProtocols, r.section.protocol) {
			t.Errorf("%s:%d: section for unknown protocol %q", referencePath, r.line, r.section.protocol)
		}
	}

	for _, full := range sortedKeys(schema) {
		secs := documented[full]
		key, isListener := strings.CutPrefix(full, "listeners.")
		if !isListener {
			if len(secs) == 0 {
				t.Errorf("%s does not document %s", referencePath, full)
			}
			continue
		}
		var want []docSection
		if ps, ok := protocolKeys[key]; ok {
			for _, p := range ps {
				want = append(want, docSection{table: "listeners", protocol: p})
			}
		} else {
			want = []docSection{{table: "listeners"}}
		}
		for _, s := range want {
			if !slices.Contains(secs, s) {
				t.Errorf("%s does not document %s under %s", referencePath, full, s)
			}
		}
		for _, s := range secs {
			if !slices.Contains(want, s) {
				t.Errorf("%s documents %s under %s, where it does not apply", referencePath, full, s)
			}
		}
	}
}

// referenceBase is the smallest valid document with one of everything, so
// that every default can be read off the result of Parse: one plugin, one
// listener per protocol, one timer.
func referenceBase() string {
	var b strings.Builder
	b.WriteString("[plugins.p]\npath = \"/p\"\n")
	for _, p := range knownProtocols {
		fmt.Fprintf(&b, "[[listeners]]\nname = %q\nprotocol = %q\naddress = \"127.0.0.1:0\"\nplugin = \"p\"\n", p, p)
	}
	b.WriteString("[[timers]]\nname = \"t\"\nevery = \"1s\"\nplugin = \"p\"\n")
	return b.String()
}

// TestReferenceDefaults: the default docs/config.md gives for a key, when
// the default cell begins with a TOML value in backquotes, is what Parse
// fills in when the key is left out.
func TestReferenceDefaults(t *testing.T) {
	ref := readReference(t)
	c, err := Parse([]byte(referenceBase()), "reference", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, r := range ref.rows {
		lit, ok := leadingCode(r.def)
		if !ok {
			continue
		}
		var doc map[string]any
		if err := toml.Unmarshal([]byte("v = "+lit), &doc); err != nil {
			t.Errorf("%s:%d: default of %s %q is not a TOML value: %v", referencePath, r.line, r.key, lit, err)
			continue
		}
		holder, err := sectionValue(c, r.section)
		if err != nil {
			t.Errorf("%s:%d: %v", referencePath, r.line, err)
			continue
		}
		got, ok := fieldByTag(holder, r.key)
		if !ok {
			continue // TestReferenceKeys reports it
		}
		if msg := sameValue(got, doc["v"]); msg != "" {
			t.Errorf("%s:%d: %s %s: the reference gives the default %s, Parse fills in %s", referencePath, r.line, r.section, r.key, lit, msg)
		}
		checked++
	}
	if checked < 25 {
		t.Errorf("checked %d defaults; the reference should give at least 25 in `backquotes`", checked)
	}
}

// TestReferenceExamples: every ```toml block of docs/config.md is a whole
// configuration that Parse accepts.
func TestReferenceExamples(t *testing.T) {
	ref := readReference(t)
	if len(ref.examples) < 5 {
		t.Fatalf("found %d TOML examples in %s", len(ref.examples), referencePath)
	}
	for _, ex := range ref.examples {
		name := fmt.Sprintf("%s (the example at line %d)", referencePath, ex.line)
		if _, err := Parse([]byte(ex.text), name, t.TempDir()); err != nil {
			t.Errorf("an example does not parse:\n%v", err)
		}
	}
}

// leadingCode returns the text in the backquotes that open s.
func leadingCode(s string) (string, bool) {
	rest, ok := strings.CutPrefix(s, "`")
	if !ok {
		return "", false
	}
	code, _, ok := strings.Cut(rest, "`")
	return code, ok
}

// sectionValue returns the struct that holds the keys of s in c.
func sectionValue(c *Config, s docSection) (reflect.Value, error) {
	switch s.table {
	case "plugins.NAME":
		return reflect.ValueOf(c.Plugins["p"]).Elem(), nil
	case "timers":
		return reflect.ValueOf(c.Timers[0]).Elem(), nil
	case "listeners":
		for _, l := range c.Listeners {
			if l.Protocol == s.protocol {
				return reflect.ValueOf(l).Elem(), nil
			}
		}
		return reflect.Value{}, fmt.Errorf("no listener for protocol %q", s.protocol)
	}
	v, ok := fieldByTag(reflect.ValueOf(c).Elem(), s.table)
	if !ok || v.Kind() != reflect.Struct {
		return reflect.Value{}, fmt.Errorf("no table %s in Config", s)
	}
	return v, nil
}

// fieldByTag returns the field of struct v whose toml tag is key.
func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ",")
		if name == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// sameValue compares a field Parse filled in with a value decoded from
// TOML, and describes the field when they differ.
func sameValue(got reflect.Value, want any) string {
	if got.Kind() == reflect.Pointer {
		if got.IsNil() {
			return "nil"
		}
		got = got.Elem()
	}
	describe := fmt.Sprintf("%v", got.Interface())
	switch {
	case got.Type() == durationType:
		s, ok := want.(string)
		d, err := time.ParseDuration(s)
		if !ok || err != nil || Duration(d) != got.Interface().(Duration) {
			return `"` + describe + `"`
		}
	case got.Kind() == reflect.Int || got.Kind() == reflect.Int64:
		if n, ok := want.(int64); !ok || n != got.Int() {
			return describe
		}
	case got.Kind() == reflect.Bool:
		if b, ok := want.(bool); !ok || b != got.Bool() {
			return describe
		}
	case got.Kind() == reflect.String:
		if s, ok := want.(string); !ok || s != got.String() {
			return fmt.Sprintf("%q", got.String())
		}
	case got.Kind() == reflect.Slice || got.Kind() == reflect.Map:
		if rv := reflect.ValueOf(want); !rv.IsValid() || rv.Len() != 0 || got.Len() != 0 {
			return describe // only empty lists and tables are defaults
		}
	default:
		return fmt.Sprintf("a %s, which this test cannot compare", got.Type())
	}
	return ""
}
