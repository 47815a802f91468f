// Package testbin builds the project's binaries for tests, once per test
// process: the kernel, the bundled plugins and test programs, with the race
// detector when the test binary has it, so every process in an end-to-end
// test is checked for races.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Main is a TestMain: it creates a Builder, hands it to use, runs the tests,
// removes what was built and exits.
func Main(m *testing.M, use func(*Builder)) {
	b, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	use(b)
	code := m.Run()
	b.Close()
	os.Exit(code)
}

// Builder builds binaries into one directory and remembers what it built.
// Create one in TestMain with New and Close it when the tests are done.
type Builder struct {
	dir  string
	root string

	mu     sync.Mutex
	builds map[string]*build // by output name; guarded by mu
}

type build struct {
	once sync.Once
	path string
	err  error
}

// New returns a Builder writing into a fresh temporary directory.
func New() (*Builder, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "switchyard-bin-")
	if err != nil {
		return nil, err
	}
	return &Builder{dir: dir, root: root, builds: make(map[string]*build)}, nil
}

// Close removes what the Builder built.
func (b *Builder) Close() error { return os.RemoveAll(b.dir) }

// Root is the module's root directory.
func (b *Builder) Root() string { return b.root }

// Build builds the package pkg (a path relative to the module root, such as
// "./plugins/probe") as name, with main.version set to version when it is
// not empty, and returns the binary's path. Builds of the same name happen
// once.
func (b *Builder) Build(t testing.TB, name, pkg, version string) string {
	t.Helper()
	p, err := b.BuildE(name, pkg, version)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildE is Build returning its error.
func (b *Builder) BuildE(name, pkg, version string) (string, error) {
	b.mu.Lock()
	bl, ok := b.builds[name]
	if !ok {
		bl = &build{}
		b.builds[name] = bl
	}
	b.mu.Unlock()
	bl.once.Do(func() {
		out := filepath.Join(b.dir, name)
		args := []string{"build", "-o", out}
		if Race {
			args = append(args, "-race")
		}
		if version != "" {
			args = append(args, "-ldflags", "-X main.version="+version)
		}
		args = append(args, pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = b.root
		if outp, err := cmd.CombinedOutput(); err != nil {
			bl.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, outp)
			return
		}
		bl.path = out
	})
	return bl.path, bl.err
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
