package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// tourHeading opens the README section whose shell blocks TestReadmeTour
// runs.
const tourHeading = "## A hot swap, by copy-paste"

// readmeTour returns the ```sh blocks of the README's tour, in order, each
// as its lines.
func readmeTour(t *testing.T, readme string) [][]string {
	t.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]string
	var block []string
	in, fenced := false, false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == tourHeading:
			in = true
		case !in:
		case fenced && line == "```":
			blocks = append(blocks, block)
			block, fenced = nil, false
		case fenced:
			block = append(block, line)
		case line == "```sh":
			fenced = true
		case strings.HasPrefix(line, "## "):
			in = false
		}
	}
	if len(blocks) < 2 {
		t.Fatalf("%s: the tour (%q) has %d ```sh blocks; want the daemon's and at least one more", readme, tourHeading, len(blocks))
	}
	return blocks
}

// claimRE finds the claim after a command: two or more spaces, "# ", text.
var claimRE = regexp.MustCompile(`\s{2,}# (.*)$`)

// readOnlyRE matches the commands that may be re-run until their claim
// holds: the README's "sleep 1" lets a person's swap land, but a loaded
// test machine may need longer.
var readOnlyRE = regexp.MustCompile(`^(curl |bin/switchyard ctl (plugins|status|listeners|conns|timers|state get|state list)\b)`)

// claimHolds reports whether some line of out holds claim, with runs of
// white space collapsed and "..." standing for anything.
func claimHolds(out, claim string) bool {
	parts := strings.Split(strings.Join(strings.Fields(claim), " "), "...")
	for _, line := range strings.Split(out, "\n") {
		rest := strings.Join(strings.Fields(line), " ")
		ok := true
		for _, p := range parts {
			p = strings.TrimSpace(p)
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok {
			return true
		}
	}
	return false
}

// TestClaimHolds pins down how the tour's claims read.
func TestClaimHolds(t *testing.T) {
	table := "NAME   GEN  STATE    PID    VERSION\nhello  2    serving  11042  v2\n"
	for _, tc := range []struct {
		out, claim string
		want       bool
	}{
		{"hello from v2 (pid 4242)\n", "hello from v2 (pid ...)", true},
		{"hello from v3 (pid 4242)\n", "hello from v2 (pid ...)", false},
		{"hello from dev (pid 4242)\n", "hello from ... (pid ...)", true},
		{table, "hello 2 serving ... v2", true},
		{table, "hello 1 serving", false},
		{table, "hello 2 serving ... v3", false},
		{"reloaded hello: generation 4\n", "reloaded hello: generation 4", true},
		{"", "shutting down", false},
	} {
		if got := claimHolds(tc.out, tc.claim); got != tc.want {
			t.Errorf("claimHolds(%q, %q) = %v, want %v", tc.out, tc.claim, got, tc.want)
		}
	}
}

// TestReadmeTour runs the README's hot-swap tour as a reader would: in a
// copy of the source tree, the first ```sh block (make build, then the
// daemon on its embedded default configuration) in the background, then
// every line of the other blocks with sh, one at a time. Each must exit 0,
// and its output must hold what the README's comment after it claims. The
// tour's last command stops the daemon, which must exit 0.
//
// The default configuration binds fixed ports on 127.0.0.1 (8080, 8081,
// 5353, 2525, 4000), as TestDefaultConfig does: the test fails if they are
// taken. XDG_RUNTIME_DIR and STATE_DIRECTORY point at temporary
// directories, so the daemon's sockets and store, and ctl's socket, stay
// there.
func TestReadmeTour(t *testing.T) {
	for _, tool := range []string{"sh", "make", "go", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeTour(t, filepath.Join(root, "README.md"))
	portsFree(t)

	dir := t.TempDir()
	copyTree(t, root, dir)
	run := testutil.ShortDir(t)
	env := tourEnv("XDG_RUNTIME_DIR="+run, "STATE_DIRECTORY="+filepath.Join(t.TempDir(), "state"))

	// The daemon's block, as a whole, in the background.
	daemon := exec.Command("sh", "-c", strings.Join(blocks[0], "\n"))
	daemon.Dir, daemon.Env = dir, env
	out := &testutil.SyncBuffer{}
	daemon.Stdout, daemon.Stderr = out, out
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var daemonErr error
	go func() {
		daemonErr = daemon.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(-daemon.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
		if t.Failed() {
			t.Logf("the daemon's block printed:\n%s", out.String())
		}
	})
	tourReady(t, dir, env, done, out)

	for _, block := range blocks[1:] {
		for _, line := range block {
			if cmd := strings.TrimSpace(line); cmd == "" || strings.HasPrefix(cmd, "#") {
				continue
			}
			tourStep(t, dir, env, line)
		}
	}

	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the daemon still runs after the tour's last command")
	}
	if daemonErr != nil {
		t.Fatalf("the daemon's block %q: %v", blocks[0], daemonErr)
	}
}

// tourStep runs one line of the tour with sh and checks its claim.
func tourStep(t *testing.T, dir string, env []string, line string) {
	t.Helper()
	claim := ""
	if m := claimRE.FindStringSubmatch(line); m != nil {
		claim = strings.TrimSpace(m[1])
	}
	retry := claim != "" && readOnlyRE.MatchString(strings.TrimSpace(line))
	deadline := time.Now().Add(60 * time.Second)
	for tries := 1; ; tries++ {
		out, errOut, err := shell(dir, env, line, 10*time.Minute)
		if err != nil {
			t.Fatalf("README tour: %s\nfailed: %v\nstdout:\n%s\nstderr:\n%s", line, err, out, errOut)
		}
		if claim == "" || claimHolds(out, claim) {
			t.Logf("$ %s\n%s", line, out)
			return
		}
		if !retry || time.Now().After(deadline) {
			t.Fatalf("README tour: %s\nprinted (try %d):\n%s\nwhich does not hold %q; stderr:\n%s", line, tries, out, claim, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shell runs line with sh -c in dir and returns its stdout and stderr.
func shell(dir string, env []string, line string, timeout time.Duration) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Dir, cmd.Env = dir, env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	return o.String(), e.String(), err
}

// tourReady waits until the daemon's plugins all serve, or fails if its
// block ends first.
func tourReady(t *testing.T, dir string, env []string, done chan struct{}, out *testutil.SyncBuffer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute) // make build in a fresh tree comes first
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("the daemon's block ended before the daemon served:\n%s", out.String())
		default:
		}
		if o, _, err := shell(dir, env, "bin/switchyard ctl -json plugins", 30*time.Second); err == nil {
			var r struct {
				Data []struct{ State string } `json:"data"`
			}
			if json.Unmarshal([]byte(o), &r) == nil && len(r.Data) > 0 {
				serving := true
				for _, p := range r.Data {
					serving = serving && p.State == "serving"
				}
				if serving {
					return
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the daemon did not serve within 5 minutes:\n%s", out.String())
}

// portsFree fails unless the default configuration's addresses are free.
func portsFree(t *testing.T) {
	t.Helper()
	for _, port := range []int{8080, 8081, 5353, 2525, 4000} {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the tour runs the default configuration, which needs %s: %v", addr, err)
		}
		ln.Close()
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:5353")
	if err != nil {
		t.Fatalf("the tour runs the default configuration, which needs udp 127.0.0.1:5353: %v", err)
	}
	pc.Close()
}

// copyTree copies the regular files of the source tree at root into dst,
// without .git and bin: the tour builds there as a reader would in a fresh
// checkout.
func copyTree(t *testing.T, root, dst string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel == ".git" || rel == "bin" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tourEnv is the test's environment without what would point the tour's
// daemon or ctl elsewhere, plus extra.
func tourEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "SWITCHYARD_SOCKET", "XDG_RUNTIME_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "GORACE=atexit_sleep_ms=0"), extra...)
}
