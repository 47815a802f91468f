package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uidOf reads the real and effective uid of a process.
func uidOf(t *testing.T, pid int) (real, effective int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "Uid:" {
			real, _ = strconv.Atoi(f[1])
			effective, _ = strconv.Atoi(f[2])
			return real, effective
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return 0, 0
}

// privilegedPort finds a free port below 1024 on loopback.
func privilegedPort(t *testing.T) int {
	t.Helper()
	for p := 900; p < 1024; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free port below 1024")
	return 0
}

// TestDropPrivileges: a kernel started as root binds a privileged port,
// then becomes the configured user before it starts its plugins; it serves
// on the port, its plugins run as that user, and it shuts down cleanly.
func TestDropPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the kernel must start as root to drop to another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	dir := layout(t)
	openUp(t, dir) // the unprivileged kernel reads its plugins' executables from here
	port := privilegedPort(t)
	cfg := fmt.Sprintf(`
[privileges]
user = "nobody"

[plugins.probe]
path = "bin/plugins/probe"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:%d"
plugin = "probe"
`, port)
	k := startServe(t, dir, cfg)
	k.ready()
	if _, e := uidOf(t, k.cmd.Process.Pid); e != uid {
		t.Fatalf("kernel runs as uid %d, want nobody (%d)", e, uid)
	}
	ps := k.plugins()
	if len(ps) != 1 || ps[0].PID == 0 {
		t.Fatalf("plugins %+v", ps)
	}
	if r, e := uidOf(t, ps[0].PID); r != uid || e != uid {
		t.Fatalf("plugin runs as uid %d/%d, want nobody (%d)", r, e, uid)
	}
	if body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); !strings.HasPrefix(body, "probe v1 pid ") {
		t.Fatalf("GET on the privileged port: %q", body)
	}
	if !strings.Contains(k.stderr.String(), "privileges dropped") {
		t.Fatalf("no log line about the drop:\n%s", k.stderr.String())
	}
	// A swap still works: the unprivileged kernel writes its snapshots.
	out, errOut, code := k.ctl("reload", "probe")
	if code != 0 {
		t.Fatalf("ctl reload: %d %q %q", code, out, errOut)
	}
	k.ctl("shutdown")
	if code := k.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, k.stderr.String())
	}
	if _, err := os.Stat(k.socket); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
	// A second start as root finds its directories owned by nobody and
	// takes them up again.
	k2 := startServe(t, dir, cfg)
	k2.ready()
}

// TestAdminRefusesOtherUsers: even when the admin socket's file mode lets
// another user connect, the kernel checks the peer's credentials
// (SO_PEERCRED) and answers only its own user and root.
func TestAdminRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test runs ctl as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	dir := layout(t)
	openUp(t, dir)
	k := startServe(t, dir, probeOnly)
	k.ready()
	// Open the socket's file mode wide, as a careless operator might.
	openUp(t, filepath.Dir(k.socket))
	if err := os.Chmod(k.socket, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(k.bin, "ctl", "-socket", k.socket, "status")
	cmd.Env = testEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("uid %d may not use this socket", uid)) {
		t.Fatalf("ctl as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(k.stderr.String(), "admin connection refused") {
		t.Fatalf("no log line about the refusal:\n%s", k.stderr.String())
	}
	// Root is still answered.
	if _, errOut, code := k.ctl("status"); code != 0 {
		t.Fatalf("ctl as root: %d %s", code, errOut)
	}
}

// openUp lets other users traverse dir and the temporary directories above
// it.
func openUp(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()) && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}
