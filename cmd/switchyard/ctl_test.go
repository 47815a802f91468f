package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCtlNoKernelSocket: with no kernel, ctl and ctl watch say where they
// looked, however the socket was chosen, and give the command that starts
// a kernel answering there.
func TestCtlNoKernelSocket(t *testing.T) {
	bin := bins.Build(t, "switchyard", "./cmd/switchyard", "v1")
	dir := t.TempDir()
	runtime := filepath.Join(dir, "run")
	cfg := filepath.Join(dir, "switchyard.toml")
	cfgSock := filepath.Join(dir, "cfg.sock")
	if err := os.WriteFile(cfg, []byte("[admin]\nsocket = \""+cfgSock+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "stale.sock")
	if err := os.WriteFile(stale, nil, 0o600); err != nil { // nothing listens behind it
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		args       []string
		env        []string
		path, hint string
	}{
		{"flag", []string{"-socket", filepath.Join(dir, "flag.sock")}, nil,
			filepath.Join(dir, "flag.sock"), `"switchyard serve -socket ` + filepath.Join(dir, "flag.sock") + `"`},
		{"environment", nil, []string{"SWITCHYARD_SOCKET=" + filepath.Join(dir, "env.sock")},
			filepath.Join(dir, "env.sock"), `"switchyard serve"`},
		{"config", []string{"-config", cfg}, nil, cfgSock, `"switchyard serve -config ` + cfg + `"`},
		{"default", nil, []string{"XDG_RUNTIME_DIR=" + runtime},
			filepath.Join(runtime, "switchyard", "admin.sock"), `"switchyard serve"`},
		{"stale", []string{"-socket", stale}, nil, stale, `connection refused`},
	} {
		for _, command := range []string{"status", "watch"} {
			t.Run(tt.name+" "+command, func(t *testing.T) {
				cmd := exec.Command(bin, append(append([]string{"ctl"}, tt.args...), command)...)
				cmd.Env = testEnv(tt.env...)
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Fatalf("exit: %v\n%s", err, out)
				}
				for _, want := range []string{"no switchyard kernel answers at " + tt.path + " (", tt.hint} {
					if !strings.Contains(string(out), want) {
						t.Errorf("%q lacks %q", out, want)
					}
				}
			})
		}
	}
}
