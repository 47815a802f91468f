package scaffold

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/testbin"
)

var bins *testbin.Builder

func TestMain(m *testing.M) { testbin.Main(m, func(b *testbin.Builder) { bins = b }) }

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "hello", "my-plugin", "my_plugin2", strings.Repeat("a", maxName)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Hello", "2fast", "-x", "_x", "a.b", "a/b", "a b", "héllo", "../x", "vendor", "testdata", strings.Repeat("a", maxName+1)} {
		if err := CheckName(bad); !errors.Is(err, ErrName) {
			t.Errorf("CheckName(%q) = %v, want ErrName", bad, err)
		}
	}
}

func TestParseProtocols(t *testing.T) {
	for in, want := range map[string][]string{
		"http":             {"http"},
		"timer,line":       {"line", "timer"},
		"line, timer,line": {"line", "timer"},
		"DNS":              {"dns"},
		"scgi,http":        {"http", "scgi"},
	} {
		got, err := ParseProtocols(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseProtocols(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"":          "empty protocol",
		"line,":     "empty protocol",
		"smtp":      `"smtp": use http, scgi, dns, line, timer`,
		"http,grpc": `"grpc"`,
	} {
		if _, err := ParseProtocols(in); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseProtocols(%q) = %v, want ErrProtocol mentioning %q", in, err, msg)
		}
	}
}

// TestNewRefuses: bad options are errors that say what to do, and leave
// nothing behind.
func TestNewRefuses(t *testing.T) {
	root := bins.Root()
	outside := t.TempDir()
	full := filepath.Join(outside, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(outside, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	inModule := filepath.Join(root, "internal", "scaffold", "_never")
	for _, tt := range []struct {
		name string
		o    Options
		is   error
		msg  string
	}{
		{"bad name", Options{Name: "Bad", Protocols: []string{"http"}, Dir: filepath.Join(outside, "x"), Checkout: root}, ErrName, "lower-case letter"},
		{"no protocol", Options{Name: "x", Dir: filepath.Join(outside, "x"), Checkout: root}, ErrProtocol, "none given"},
		{"bad protocol", Options{Name: "x", Protocols: []string{"gopher"}, Dir: filepath.Join(outside, "x"), Checkout: root}, ErrProtocol, `"gopher"`},
		{"non-empty folder", Options{Name: "full", Protocols: []string{"http"}, Dir: full, Checkout: root}, ErrExists, "keep.txt"},
		{"a file", Options{Name: "file", Protocols: []string{"http"}, Dir: file, Checkout: root}, ErrExists, "is a file"},
		{"no checkout", Options{Name: "x", Protocols: []string{"http"}, Dir: filepath.Join(outside, "x"), Search: []string{outside}}, ErrCheckout, "-switchyard DIR"},
		{"not a checkout", Options{Name: "x", Protocols: []string{"http"}, Dir: filepath.Join(outside, "x"), Checkout: outside}, ErrCheckout, "has no go.mod of module " + Module},
		{"bad module path", Options{Name: "x", Protocols: []string{"http"}, Dir: filepath.Join(outside, "x"), Checkout: root, Module: "a//b"}, nil, `bad module path "a//b"`},
		{"module flag inside", Options{Name: "x", Protocols: []string{"http"}, Dir: filepath.Join(inModule, "x"), Module: "example.com/x"}, nil, "apply only outside it"},
		{"checkout inside", Options{Name: "x", Protocols: []string{"http"}, Dir: filepath.Join(inModule, "x"), Checkout: root}, nil, "apply only outside it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.o)
			if err == nil || tt.is != nil && !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("New: %v; want an error mentioning %q", err, tt.msg)
			}
		})
	}
	entries, _ := os.ReadDir(outside)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"file", "full"}) {
		t.Errorf("left behind in %s: %q", outside, names)
	}
	if b, err := os.ReadFile(filepath.Join(full, "keep.txt")); err != nil || string(b) != "mine" {
		t.Errorf("the existing folder was changed: %q %v", b, err)
	}
	if _, err := os.Stat(inModule); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was created: %v", inModule, err)
	}
}

// TestNewFiles: what New writes for each kind of plugin, and an empty
// folder is fine to write into.
func TestNewFiles(t *testing.T) {
	root := bins.Root()
	for _, tt := range []struct {
		protocols string
		files     []string
	}{
		{"http", []string{"http.go", "http_test.go"}},
		{"scgi", []string{"http.go", "http_test.go"}},
		{"dns", []string{"dns.go", "dns_test.go"}},
		{"line", []string{"line.go", "line_test.go"}},
		{"timer", []string{"timer.go", "timer_test.go"}},
		{"line,timer", []string{"line.go", "line_test.go", "timer.go", "timer_test.go"}},
	} {
		t.Run(tt.protocols, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "p")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			ps, err := ParseProtocols(tt.protocols)
			if err != nil {
				t.Fatal(err)
			}
			res, err := New(Options{Name: "p", Protocols: ps, Dir: dir, Search: []string{root}})
			if err != nil {
				t.Fatal(err)
			}
			want := append([]string{".gitignore", "README.md", "go.mod", "go.sum", "main.go", "main_test.go"}, tt.files...)
			slices.Sort(want)
			if !slices.Equal(res.Files, want) {
				t.Errorf("files %q, want %q", res.Files, want)
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != len(want) {
				t.Errorf("the folder has %d entries (%v), want %d", len(entries), err, len(want))
			}
			if res.InModule || res.Root != root || res.Binary != filepath.Join(dir, "p") {
				t.Errorf("result %+v", res)
			}
			gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range []string{"module p\n", "\t" + Module + " v0.0.0\n", "replace " + Module + " => " + root + "\n"} {
				if !strings.Contains(string(gomod), line) {
					t.Errorf("go.mod lacks %q:\n%s", line, gomod)
				}
			}
			for _, w := range []string{"[plugins.p]", `path = "` + res.Binary + `"`, `plugin = "p"`} {
				if !strings.Contains(res.Config, w) {
					t.Errorf("config lacks %q:\n%s", w, res.Config)
				}
			}
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil || !strings.Contains(string(readme), res.Config) || !strings.Contains(string(readme), res.Swap) {
				t.Errorf("README lacks the config or the swap: %v\n%s", err, readme)
			}
		})
	}
}

func TestParseMod(t *testing.T) {
	m := parseMod([]byte(`module "example.com/m" // a comment

go 1.26.0

toolchain go1.26.8

require example.com/one v1.0.0

require (
	example.com/two v1.2.0 // indirect
	// a comment line
	example.com/three v0.0.0-2026 // indirect
)

replace example.com/one => ./local

replace (
	example.com/two v1.2.0 => example.com/fork v1.2.1
)

exclude example.com/bad v1.0.0
`))
	if m.module != "example.com/m" || m.goVersion != "1.26.0" || m.toolchain != "go1.26.8" {
		t.Errorf("module %q go %q toolchain %q", m.module, m.goVersion, m.toolchain)
	}
	wantReq := [][2]string{{"example.com/one", "v1.0.0"}, {"example.com/two", "v1.2.0"}, {"example.com/three", "v0.0.0-2026"}}
	if !slices.Equal(m.require, wantReq) {
		t.Errorf("require %q", m.require)
	}
	wantRepl := []string{"example.com/one => ./local", "example.com/two v1.2.0 => example.com/fork v1.2.1"}
	if !slices.Equal(m.replace, wantRepl) {
		t.Errorf("replace %q", m.replace)
	}
}

func TestCheckModulePath(t *testing.T) {
	for _, ok := range []string{"x", "example.com/you/x", "github.com/a-b/c_d.e~f"} {
		if err := checkModulePath(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/x", "x/", "a//b", "-x", ".x", "a/../b", "a b", "a\\b", "é"} {
		if err := checkModulePath(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzParseMod: any text parses without a panic, and finds no directive
// the text does not name.
func FuzzParseMod(f *testing.F) {
	f.Add("module m\n\ngo 1.26.0\n\nrequire (\n\tx v1 // indirect\n)\nreplace a => ./b\n")
	f.Add("require (\nrequire x v1\n)\n")
	f.Add("module \"unterminated\n")
	f.Fuzz(func(t *testing.T, s string) {
		m := parseMod([]byte(s))
		for _, d := range []struct {
			word  string
			found bool
		}{{"module", m.module != ""}, {"go", m.goVersion != ""}, {"toolchain", m.toolchain != ""},
			{"require", len(m.require) > 0}, {"replace", len(m.replace) > 0}} {
			if d.found && !strings.Contains(s, d.word) {
				t.Fatalf("found a %s directive in %q", d.word, s)
			}
		}
	})
}
