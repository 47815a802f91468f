package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
)

// Module is switchyard's module path.
const Module = "github.com/switchyard-dev/switchyard"

// Protocols are the protocols a plugin may serve, in the order the
// generated code and configuration list them. scgi requests reach the same
// http.Handler as http ones.
var Protocols = []string{"http", "scgi", "dns", "line", "timer"}

// maxName bounds a plugin's name: it names a folder, a binary, a slot and
// the prefix of its keys in the shared store.
const maxName = 64

// Sentinel errors; New wraps them with the details.
var (
	ErrName     = errors.New("scaffold: bad plugin name")
	ErrProtocol = errors.New("scaffold: bad protocol")
	ErrExists   = errors.New("scaffold: folder exists and is not empty")
	ErrCheckout = errors.New("scaffold: no switchyard checkout")
)

// Options say what to scaffold and where.
type Options struct {
	// Name is the plugin's name: a lower-case letter, then lower-case
	// letters, digits, '-' and '_'.
	Name string
	// Protocols lists what the plugin serves, each one of Protocols.
	Protocols []string
	// Dir is the folder to create; it must not exist or be empty.
	Dir string
	// Module is the module path of the go.mod written outside the
	// switchyard module ("" means Name). Inside it, it must be empty.
	Module string
	// Checkout is a switchyard source checkout (the folder of its go.mod)
	// for the go.mod written outside the switchyard module: its replace
	// directive points there, and its requirements and go.sum are copied.
	// Inside the switchyard module, it must be empty.
	Checkout string
	// Search lists folders to look for a checkout at or above when
	// Checkout is empty and one is needed (the working directory, the
	// executable's folder).
	Search []string
}

// Result is what New wrote.
type Result struct {
	Dir       string   // the plugin's folder, absolute
	Files     []string // the files written, relative to Dir, sorted
	InModule  bool     // the folder is a package of the switchyard module at Root
	Root      string   // the switchyard module (InModule) or the checkout the go.mod replaces it with
	Binary    string   // where the README's build command writes the executable, absolute
	Build     string   // that build command, run in BuildDir
	Swap      string   // the README's shell line that builds v2 and renames it over Binary, run in BuildDir
	BuildDir  string
	Config    string // the TOML to add to the kernel's configuration
	Listeners []Listener
}

// Listener is one [[listeners]] entry of Result.Config.
type Listener struct {
	Name, Protocol, Address string
}

//go:embed templates
var templates embed.FS

// parsed holds the templates; parsing them cannot fail once the package's
// tests pass.
var parsed = template.Must(template.New("").Funcs(template.FuncMap{
	"join": strings.Join,
	"host": func(addr string) string { h, _, _ := net.SplitHostPort(addr); return h },
	"port": func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p },
}).ParseFS(templates, "templates/*.tmpl"))

// CheckName reports whether name can name a plugin.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", ErrName)
	}
	if len(name) > maxName {
		return fmt.Errorf("%w %q: longer than %d bytes", ErrName, name, maxName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_') {
			continue
		}
		return fmt.Errorf("%w %q: use a lower-case letter, then lower-case letters, digits, '-' and '_'", ErrName, name)
	}
	if name == "vendor" || name == "testdata" {
		return fmt.Errorf("%w %q: the go command treats a folder of that name specially", ErrName, name)
	}
	return nil
}

// ParseProtocols reads a comma-separated list of protocols ("line,timer")
// and returns them in the order of Protocols, each once.
func ParseProtocols(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if !slices.Contains(Protocols, p) {
			if p == "" {
				return nil, fmt.Errorf("%w: empty protocol in %q; use %s", ErrProtocol, s, strings.Join(Protocols, ", "))
			}
			return nil, fmt.Errorf("%w %q: use %s, or several separated by commas", ErrProtocol, p, strings.Join(Protocols, ", "))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(Protocols, a) - slices.Index(Protocols, b) })
	return out, nil
}

// FindCheckout returns the first switchyard checkout at or above one of the
// folders, or "" when there is none.
func FindCheckout(dirs ...string) string {
	for _, d := range dirs {
		if root, mod := enclosingModule(d); mod == Module {
			return root
		}
	}
	return ""
}

// New writes the plugin's folder. It writes every file into a fresh folder
// beside Dir and renames it into place, so Dir either has the whole plugin
// or is left as it was.
func New(o Options) (*Result, error) {
	if err := CheckName(o.Name); err != nil {
		return nil, err
	}
	if len(o.Protocols) == 0 {
		return nil, fmt.Errorf("%w: none given; use %s", ErrProtocol, strings.Join(Protocols, ", "))
	}
	protocols, err := ParseProtocols(strings.Join(o.Protocols, ","))
	if err != nil {
		return nil, err
	}
	if o.Dir == "" {
		return nil, errors.New("scaffold: no folder given")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("scaffold: %w", err)
	}
	if err := checkEmpty(dir); err != nil {
		return nil, err
	}
	d := data{Name: o.Name, Protocols: protocols, Dir: dir}
	for _, p := range protocols {
		switch p {
		case "http":
			d.HTTP = true
		case "scgi":
			d.SCGI = true
		case "dns":
			d.DNS = true
		case "line":
			d.Line = true
		case "timer":
			d.Timer = true
		}
	}
	root, mod := enclosingModule(filepath.Dir(dir))
	res := &Result{Dir: dir}
	if mod == Module {
		if o.Module != "" || o.Checkout != "" {
			return nil, fmt.Errorf("scaffold: %s is inside the switchyard module at %s, which builds it; -module and -switchyard apply only outside it", dir, root)
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return nil, fmt.Errorf("scaffold: %w", err)
		}
		d.InModule, d.Root = true, root
		d.InPlugins = filepath.Dir(dir) == filepath.Join(root, "plugins")
		d.Package = "./" + filepath.ToSlash(rel)
		d.Binary = filepath.Join(root, "bin", "plugins", o.Name)
		d.BuildDir = root
		d.BinaryArg = "bin/plugins/" + o.Name
	} else {
		d.Module = o.Module
		if d.Module == "" {
			d.Module = o.Name
		}
		if err := checkModulePath(d.Module); err != nil {
			return nil, err
		}
		if o.Checkout == "" {
			o.Checkout = FindCheckout(o.Search...)
		}
		if o.Checkout == "" {
			return nil, fmt.Errorf("%w: %s is outside the switchyard module, and switchyard is not published, so its go.mod must replace switchyard with a source checkout: give one with -switchyard DIR", ErrCheckout, dir)
		}
		checkout, err := filepath.Abs(o.Checkout)
		if err != nil {
			return nil, fmt.Errorf("scaffold: %w", err)
		}
		if _, m := enclosingModule(checkout); m != Module || !exists(filepath.Join(checkout, "go.mod")) {
			return nil, fmt.Errorf("%w: %s has no go.mod of module %s", ErrCheckout, checkout, Module)
		}
		d.Root = checkout
		d.Package = "."
		d.Binary = filepath.Join(dir, o.Name)
		d.BuildDir = dir
		d.BinaryArg = o.Name
	}
	d.Listeners = listeners(o.Name, protocols)
	if d.Config, err = execute("config.toml.tmpl", d); err != nil {
		return nil, err
	}
	d.Config = strings.TrimRight(d.Config, "\n")

	files, err := render(d)
	if err != nil {
		return nil, err
	}
	if !d.InModule {
		gomod, gosum, err := moduleFiles(d)
		if err != nil {
			return nil, err
		}
		files["go.mod"], files["go.sum"] = gomod, gosum
	}
	if err := writeAll(dir, files); err != nil {
		return nil, err
	}
	for name := range files {
		res.Files = append(res.Files, name)
	}
	slices.Sort(res.Files)
	res.InModule, res.Root, res.Binary = d.InModule, d.Root, d.Binary
	res.Swap = d.Swap("v2")
	res.Build, res.BuildDir, res.Config, res.Listeners = d.Build("v1"), d.BuildDir, d.Config, d.Listeners
	return res, nil
}

// data is what the templates see.
type data struct {
	Name                         string
	Protocols                    []string
	HTTP, SCGI, DNS, Line, Timer bool
	Dir                          string
	InModule                     bool
	InPlugins                    bool   // in the module's plugins/ folder, which scripts/build builds
	Root                         string // the switchyard module or checkout
	Package                      string // the package as the build command names it
	Module                       string // outside the module: the go.mod's module path
	Binary                       string // absolute
	BinaryArg                    string // as the build command's -o names it
	BuildDir                     string
	Listeners                    []Listener
	Config                       string
}

// Handles reports whether the plugin has an http.Handler.
func (d data) Handles() bool { return d.HTTP || d.SCGI }

// build is the command that builds the plugin with version v into out.
func (d data) build(v, out string) string {
	return fmt.Sprintf("go build -ldflags \"-X main.version=%s\" -o %s %s", v, out, d.Package)
}

// Build is the command that builds version v where the configuration
// points.
func (d data) Build(v string) string { return d.build(v, d.BinaryArg) }

// BuildNew builds version v beside that, to be renamed over it.
func (d data) BuildNew(v string) string { return d.build(v, d.BinaryArg+".new") }

// Swap builds version v beside the binary and renames it over it.
func (d data) Swap(v string) string {
	return fmt.Sprintf("%s && mv %s.new %s", d.BuildNew(v), d.BinaryArg, d.BinaryArg)
}

// Served lists the protocols as the plugin's Describe reports them: scgi
// is served by the http handler.
func (d data) Served() []string {
	var ps []string
	if d.Handles() {
		ps = append(ps, "http")
	}
	for _, p := range []struct {
		on   bool
		name string
	}{{d.DNS, "dns"}, {d.Line, "line"}, {d.Timer, "timer"}} {
		if p.on {
			ps = append(ps, p.name)
		}
	}
	return ps
}

// listeners gives each protocol but timer a loopback listener, named after
// the plugin (with the protocol when there are several).
func listeners(name string, protocols []string) []Listener {
	addrs := map[string]string{"http": "127.0.0.1:8090", "scgi": "127.0.0.1:8091", "dns": "127.0.0.1:5354", "line": "127.0.0.1:4001"}
	var ls []Listener
	for _, p := range protocols {
		if a, ok := addrs[p]; ok {
			ls = append(ls, Listener{Protocol: p, Address: a})
		}
	}
	for i := range ls {
		ls[i].Name = name
		if len(ls) > 1 {
			ls[i].Name = name + "-" + ls[i].Protocol
		}
	}
	return ls
}

// render executes the templates of d's protocols into file contents, Go
// files formatted.
func render(d data) (map[string][]byte, error) {
	files := map[string]string{
		"main.go":      "main.go.tmpl",
		"main_test.go": "main_test.go.tmpl",
		"README.md":    "README.md.tmpl",
	}
	if !d.InModule {
		files[".gitignore"] = "gitignore.tmpl"
	}
	for _, p := range []struct {
		on   bool
		name string
	}{{d.Handles(), "http"}, {d.DNS, "dns"}, {d.Line, "line"}, {d.Timer, "timer"}} {
		if p.on {
			files[p.name+".go"] = p.name + ".go.tmpl"
			files[p.name+"_test.go"] = p.name + "_test.go.tmpl"
		}
	}
	out := make(map[string][]byte, len(files))
	for name, tmpl := range files {
		s, err := execute(tmpl, d)
		if err != nil {
			return nil, err
		}
		b := []byte(s)
		if strings.HasSuffix(name, ".go") {
			if b, err = format.Source(b); err != nil {
				return nil, fmt.Errorf("scaffold: %s does not format: %w\n%s", name, err, s)
			}
		}
		out[name] = b
	}
	return out, nil
}

func execute(name string, d data) (string, error) {
	var b bytes.Buffer
	if err := parsed.ExecuteTemplate(&b, name, d); err != nil {
		return "", fmt.Errorf("scaffold: %w", err)
	}
	return b.String(), nil
}

// checkEmpty refuses a dir that exists and is not an empty folder.
func checkEmpty(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("scaffold: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is a file", ErrExists, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("scaffold: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s has %s; choose another name or -dir, or remove it", ErrExists, dir, entries[0].Name())
	}
	return nil
}

// writeAll writes files into a new folder beside dir and renames it to
// dir, which must be missing or an empty folder.
func writeAll(dir string, files map[string][]byte) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("scaffold: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".new-")
	if err != nil {
		return fmt.Errorf("scaffold: %w", err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up a failure
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return fmt.Errorf("scaffold: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("scaffold: %w", err)
	}
	// An empty folder is replaced; Remove fails if someone wrote into it
	// since checkEmpty.
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("scaffold: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("scaffold: %w", err)
	}
	return nil
}

// enclosingModule finds the go.mod at or above dir and returns its folder
// and module path, or "" and "" when there is none.
func enclosingModule(dir string) (root, module string) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			return dir, modulePath(b)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ""
		}
		dir = parent
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
