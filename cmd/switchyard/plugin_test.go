package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPluginNew drives `switchyard plugin new`: a plugin written outside
// the module finds this checkout from the working directory, flags may
// follow the arguments, and bad input is refused with a clear error. What
// the scaffold writes is built and run in internal/scaffold's tests.
func TestPluginNew(t *testing.T) {
	bin := bins.Build(t, "switchyard", "./cmd/switchyard", "v1")
	root := bins.Root()
	dir := t.TempDir()
	run := func(args ...string) (string, string, int) {
		t.Helper()
		var o, e bytes.Buffer
		cmd := exec.Command(bin, append([]string{"plugin"}, args...)...)
		cmd.Dir, cmd.Env = root, testEnv()
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return o.String(), e.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), 0
	}

	out, errOut, code := run("new", "greeter", "line,timer", "-dir", dir)
	if code != 0 {
		t.Fatalf("plugin new: exit %d %s", code, errOut)
	}
	target := filepath.Join(dir, "greeter")
	for _, want := range []string{"wrote " + target, "main.go", "go.mod", `go build -ldflags "-X main.version=v1" -o greeter .`,
		"[plugins.greeter]", `protocol = "line"`, "[[timers]]"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(target, "go.mod"))
	if err != nil || !strings.Contains(string(gomod), "=> "+root+"\n") {
		t.Errorf("go.mod does not replace switchyard with %s: %v\n%s", root, err, gomod)
	}

	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", nil, 2, "usage: switchyard plugin new"},
		{"unknown subcommand", []string{"old"}, 2, "usage: switchyard plugin new"},
		{"help", []string{"help"}, 0, "usage: switchyard plugin new"},
		{"-h", []string{"new", "-h"}, 0, "-switchyard checkout"},
		{"no protocol", []string{"new", "x"}, 2, "want NAME and PROTOCOL, got 1"},
		{"bad name", []string{"new", "Hello", "http"}, 2, `bad plugin name "Hello"`},
		{"bad protocol", []string{"new", "x", "smtp"}, 2, `bad protocol "smtp": use http, scgi, dns, line, timer`},
		{"exists", []string{"new", "-dir", dir, "greeter", "http"}, 1, "exists and is not empty"},
		{"bad flag", []string{"new", "-frob", "x", "http"}, 2, "flag provided but not defined"},
		{"module inside", []string{"new", "-dir", filepath.Join(root, "plugins"), "-module", "example.com/x", "x", "http"}, 1, "apply only outside it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Errorf("plugin %v: exit %d, stdout %q, stderr %q; want exit %d mentioning %q", tt.args, code, out, errOut, tt.code, tt.want)
			}
		})
	}
	// Run away from any checkout (the test binary is built outside one
	// too), a plugin outside the module has nothing to replace switchyard
	// with.
	cmd := exec.Command(bin, "plugin", "new", "lost", "http")
	cmd.Dir, cmd.Env = dir, testEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "give one with -switchyard DIR") {
		t.Errorf("plugin new with no checkout: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "plugins", "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused scaffold wrote plugins/x: %v", err)
	}
}
