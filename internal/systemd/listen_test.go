package systemd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// fakeEnv is an environment a test owns.
type fakeEnv map[string]string

// env returns an Env reading and unsetting f, for a process of pid.
func (f fakeEnv) env(pid int) Env {
	return Env{
		Getenv:   func(k string) string { return f[k] },
		Unsetenv: func(k string) error { delete(f, k); return nil },
		Getpid:   func() int { return pid },
	}
}

// checkUnset fails t if f still holds a LISTEN_* variable.
func checkUnset(t *testing.T, f fakeEnv) {
	t.Helper()
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := f[k]; ok {
			t.Errorf("%s=%q still set", k, v)
		}
	}
}

// TestListenersEnv: the variables decide whether sockets were passed, a
// malformed one is an error, and all three are unset whatever happened.
func TestListenersEnv(t *testing.T) {
	const me = 4242
	for _, tc := range []struct {
		name    string
		env     fakeEnv
		wantErr string // "" = nil, nil
	}{
		{"not activated", fakeEnv{}, ""},
		{"names only", fakeEnv{"LISTEN_FDNAMES": "web"}, ""},
		{"another process", fakeEnv{"LISTEN_PID": "4243", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}, ""},
		{"another process, bad count", fakeEnv{"LISTEN_PID": "1", "LISTEN_FDS": "many"}, ""},
		{"no LISTEN_FDS", fakeEnv{"LISTEN_PID": "4242"}, ""},
		{"LISTEN_FDS=0", fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "0"}, ""},
		{"pid not a number", fakeEnv{"LISTEN_PID": "me", "LISTEN_FDS": "1"}, `LISTEN_PID="me" is not a pid`},
		{"pid zero", fakeEnv{"LISTEN_PID": "0", "LISTEN_FDS": "1"}, "is not a pid"},
		{"pid negative", fakeEnv{"LISTEN_PID": "-4242", "LISTEN_FDS": "1"}, "is not a pid"},
		{"pid with a space", fakeEnv{"LISTEN_PID": " 4242", "LISTEN_FDS": "1"}, "is not a pid"},
		{"count not a number", fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "two"}, `LISTEN_FDS="two" is not a descriptor count`},
		{"count negative", fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"}, "is not a descriptor count"},
		{"count overflows", fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "99999999999999999999"}, "is not a descriptor count"},
		{"more names than descriptors", fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web:dns"}, "LISTEN_FDNAMES names 2 descriptors, LISTEN_FDS=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls, err := tc.env.env(me).Listeners()
			if tc.wantErr == "" {
				if ls != nil || err != nil {
					t.Fatalf("Listeners = %v, %v; want nil, nil", ls, err)
				}
			} else if !errors.Is(err, ErrEnvironment) || !strings.Contains(err.Error(), tc.wantErr) || ls != nil {
				t.Fatalf("Listeners = %v, %v; want an ErrEnvironment saying %q", ls, err, tc.wantErr)
			}
			checkUnset(t, tc.env)
		})
	}

	t.Run("unset fails", func(t *testing.T) {
		e := fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "1"}.env(me)
		boom := errors.New("boom")
		e.Unsetenv = func(string) error { return boom }
		if ls, err := e.Listeners(); !errors.Is(err, boom) || ls != nil {
			t.Fatalf("Listeners = %v, %v; want the unset error", ls, err)
		}
	})
}

// freeFDs returns the first of n consecutive descriptor numbers that are
// not open, well above every open one, so that dup2 onto them closes
// nothing of the process's.
func freeFDs(t *testing.T, n int) int {
	t.Helper()
	fds, err := testutil.OpenFDs()
	if err != nil {
		t.Skipf("cannot list descriptors: %v", err)
	}
	base := 64
	for fd := range fds {
		base = max(base, fd+64)
	}
	for fd := base; fd < base+n; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Fatalf("descriptor %d is open", fd)
		}
	}
	return base
}

// passed is a socket a test passes and what Listeners should say of it.
type passed struct {
	name          string // as passed in LISTEN_FDNAMES
	wantName      string
	network, addr string
	file          *os.File
	accept        bool // a stream socket to accept a connection on
}

// TestListenersDescribe: each passed descriptor comes back named, typed and
// addressed as the socket itself says, close-on-exec, and usable. The
// descriptors are put at a free range in this process rather than at 3.
func TestListenersDescribe(t *testing.T) {
	testutil.CheckFDs(t)
	dir := testutil.ShortDir(t)
	var ps []passed
	add := func(name, wantName, network, addr string, f *os.File, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, passed{name: name, wantName: wantName, network: network, addr: addr, file: f})
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	f, err := tcp.(*net.TCPListener).File()
	add("web", "web", "tcp", tcp.Addr().String(), f, err)
	ps[len(ps)-1].accept = true

	if tcp6, err := net.Listen("tcp6", "[::]:0"); err == nil {
		defer tcp6.Close()
		f, err := tcp6.(*net.TCPListener).File()
		add("any6", "any6", "tcp", "[::]:"+strconv.Itoa(tcp6.Addr().(*net.TCPAddr).Port), f, err)
	} else {
		t.Logf("no IPv6 here: %v", err)
	}

	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	f, err = udp.(*net.UDPConn).File()
	add("dns", "dns", "udp", udp.LocalAddr().String(), f, err)

	path := filepath.Join(dir, "s.sock")
	us, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	f, err = us.(*net.UnixListener).File()
	add("", "", "unix", path, f, err)
	ps[len(ps)-1].accept = true

	gpath := filepath.Join(dir, "g.sock")
	ug, err := net.ListenPacket("unixgram", gpath)
	if err != nil {
		t.Fatal(err)
	}
	defer ug.Close()
	f, err = ug.(*net.UnixConn).File()
	add("unknown", "", "unixgram", gpath, f, err)

	abstract := fmt.Sprintf("@switchyard-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	ua, err := net.Listen("unixpacket", abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	f, err = ua.(*net.UnixListener).File()
	add("with space", "with space", "unixpacket", abstract, f, err)
	ps[len(ps)-1].accept = true

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	add("pipe", "pipe", "", "", r, nil)

	// Two more, left unnamed: fewer names than descriptors.
	for range 2 {
		f, err := udp.(*net.UDPConn).File()
		add("-", "", "udp", udp.LocalAddr().String(), f, err)
	}

	base := freeFDs(t, len(ps))
	var names []string
	for i, p := range ps {
		if err := unix.Dup3(int(p.file.Fd()), base+i, 0); err != nil {
			t.Fatal(err)
		}
		p.file.Close()
		if p.name != "-" {
			names = append(names, p.name)
		}
	}
	vars, err := ListenEnv(4242, names)
	if err != nil {
		t.Fatal(err)
	}
	env := fakeEnv{}
	for _, kv := range vars {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	env["LISTEN_FDS"] = strconv.Itoa(len(ps))
	e := env.env(4242)
	e.start = base

	ls, err := e.Listeners()
	if err != nil {
		for i := range ps {
			unix.Close(base + i)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range ls {
			l.File.Close()
		}
	})
	checkUnset(t, env)
	if len(ls) != len(ps) {
		t.Fatalf("%d listeners, want %d", len(ls), len(ps))
	}
	for i, l := range ls {
		p := ps[i]
		if l.Name != p.wantName || l.Network != p.network || l.Address != p.addr {
			t.Errorf("descriptor %d = {%q %q %q}, want {%q %q %q}", base+i, l.Name, l.Network, l.Address, p.wantName, p.network, p.addr)
		}
		if got := int(l.File.Fd()); got != base+i {
			t.Errorf("listener %d has descriptor %d, want %d", i, got, base+i)
		}
		flags, err := unix.FcntlInt(l.File.Fd(), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("descriptor %d: flags %#x, %v; want close-on-exec", base+i, flags, err)
		}
		if p.accept {
			if err := dialAccept(p.addr, p.network, l.File); err != nil {
				t.Errorf("%s %s: %v", p.network, p.addr, err)
			}
		}
	}
	if got, want := ls[0].File.Name(), "web"; got != want {
		t.Errorf("File.Name = %q, want %q", got, want)
	}
	if got, want := ls[3].File.Name(), "LISTEN_FD_"+strconv.Itoa(base+3); got != want {
		t.Errorf("File.Name of an unnamed one = %q, want %q", got, want)
	}

	t.Run("descriptor not open", func(t *testing.T) {
		start := freeFDs(t, 2)
		e := fakeEnv{"LISTEN_PID": "4242", "LISTEN_FDS": "2"}.env(4242)
		e.start = start
		ls, err := e.Listeners()
		if !errors.Is(err, ErrEnvironment) || !errors.Is(err, unix.EBADF) || ls != nil {
			t.Fatalf("Listeners = %v, %v; want an ErrEnvironment wrapping EBADF", ls, err)
		}
	})
}

// dialAccept connects to addr and accepts the connection on a listener
// made of a copy of f, then closes both.
func dialAccept(addr, network string, f *os.File) error {
	ln, err := net.FileListener(f)
	if err != nil {
		return err
	}
	defer ln.Close()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		return err
	}
	return a.Close()
}

// TestListenersProcessEnv: Listeners reads and unsets the process's own
// variables.
func TestListenersProcessEnv(t *testing.T) {
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "web")
	if ls, err := Listeners(); ls != nil || err != nil {
		t.Fatalf("Listeners = %v, %v; want nil, nil for another pid", ls, err)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still set", k, v)
		}
	}
}

func TestListenEnv(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pid   int
		names []string
		want  []string
	}{
		{"named", 42, []string{"web", "", "dns", "dns"}, []string{"LISTEN_PID=42", "LISTEN_FDS=4", "LISTEN_FDNAMES=web:unknown:dns:dns"}},
		{"pid after the fork", 0, []string{"web"}, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web"}},
		{"none", 7, nil, []string{"LISTEN_PID=7", "LISTEN_FDS=0"}},
		{"longest name", 7, []string{strings.Repeat("n", 255)}, []string{"LISTEN_PID=7", "LISTEN_FDS=1", "LISTEN_FDNAMES=" + strings.Repeat("n", 255)}},
		{"printable", 7, []string{"a b~!="}, []string{"LISTEN_PID=7", "LISTEN_FDS=1", "LISTEN_FDNAMES=a b~!="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ListenEnv(tc.pid, tc.names)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ListenEnv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"a:b", "tab\there", "new\nline", "caf\u00e9", "del\x7f", strings.Repeat("n", 256)} {
		if got, err := ListenEnv(1, []string{"ok", bad}); !errors.Is(err, ErrEnvironment) {
			t.Errorf("ListenEnv(%q) = %q, %v; want ErrEnvironment", bad, got, err)
		}
	}
}

func TestActivate(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	cmd := exec.Command("/bin/true", "-x", "y z")
	cmd.Env = []string{"A=1", "LISTEN_PID=1", "LISTEN_FDS=9", "LISTEN_FDNAMES=stale"}
	if err := Activate(cmd, []*os.File{r, w}, []string{"in", ""}); err != nil {
		t.Fatal(err)
	}
	if cmd.Path != "/bin/sh" || !slices.Equal(cmd.Args, []string{"sh", "-c", wrapper, "/bin/true", "-x", "y z"}) {
		t.Errorf("Path %q Args %q", cmd.Path, cmd.Args)
	}
	if want := []string{"A=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=in:unknown"}; !slices.Equal(cmd.Env, want) {
		t.Errorf("Env %q, want %q", cmd.Env, want)
	}
	if !slices.Equal(cmd.ExtraFiles, []*os.File{r, w}) {
		t.Errorf("ExtraFiles %v", cmd.ExtraFiles)
	}

	for _, tc := range []struct {
		name  string
		cmd   *exec.Cmd
		names []string
		want  string
	}{
		{"extra files", &exec.Cmd{Path: "/bin/true", ExtraFiles: []*os.File{r}}, nil, "already has extra files"},
		{"names", exec.Command("/bin/true"), []string{"a", "b", "c"}, "3 names for 2 files"},
		{"bad name", exec.Command("/bin/true"), []string{"a:b", "c"}, "holds ':'"},
		{"started", &exec.Cmd{Path: "/bin/true", Process: &os.Process{Pid: 1}}, nil, "after the command started"},
		{"not found", exec.Command("switchyard-no-such-program"), nil, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Activate(tc.cmd, []*os.File{r, w}, tc.names); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Activate = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// childEnv marks the test binary run as the activated child.
const childEnv = "SWITCHYARD_SYSTEMD_TEST_CHILD"

// childListener is what the child reports of one listener.
type childListener struct {
	Name, Network, Address string
	FD                     int
	CloseOnExec            bool
}

// childReport is the child's first line of output, after "REPORT ".
type childReport struct {
	PID       int
	Listeners []childListener
	Env       []string // LISTEN_* variables still set
}

// TestActivated plays systemd: it binds TCP, UDP and UNIX sockets, passes
// them to a child (this test binary, running TestActivatedChild) with
// Activate, and checks that the child found each under its name, network
// and address, at descriptors 3, 4, …, close-on-exec, with LISTEN_*
// unset, and that it answers on every one of them.
func TestActivated(t *testing.T) {
	testutil.CheckFDs(t)
	dir := testutil.ShortDir(t)

	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	// The DNS pair shares one name and one address, on UDP and TCP.
	var dnsTCP net.Listener
	var dnsUDP net.PacketConn
	for range 20 {
		if dnsTCP, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if dnsUDP, err = net.ListenPacket("udp", dnsTCP.Addr().String()); err == nil {
			break
		}
		dnsTCP.Close()
	}
	if err != nil {
		t.Fatalf("no port free on both TCP and UDP: %v", err)
	}
	defer dnsTCP.Close()
	defer dnsUDP.Close()
	gwPath := filepath.Join(dir, "gw.sock")
	gw, err := net.Listen("unix", gwPath)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	abstract := fmt.Sprintf("@switchyard-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	anon, err := net.Listen("unix", abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()

	want := []childListener{
		{"web", "tcp", web.Addr().String(), 3, true},
		{"dns", "udp", dnsUDP.LocalAddr().String(), 4, true},
		{"dns", "tcp", dnsTCP.Addr().String(), 5, true},
		{"gateway", "unix", gwPath, 6, true},
		{"", "unix", abstract, 7, true},
	}
	var files []*os.File
	for _, s := range []interface{ File() (*os.File, error) }{
		web.(*net.TCPListener), dnsUDP.(*net.UDPConn), dnsTCP.(*net.TCPListener), gw.(*net.UnixListener), anon.(*net.UnixListener),
	} {
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestActivatedChild$", "-test.count=1")
	// Stale variables in the environment are replaced.
	cmd.Env = append(os.Environ(), childEnv+"=1", "LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=stale")
	if err := Activate(cmd, files, []string{"web", "dns", "dns", "gateway", ""}); err != nil {
		t.Fatal(err)
	}
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reports := make(chan string, 1) // the report line; closed if none came
	waited := make(chan error, 1)
	go func() {
		// Read all of stdout, so that the child never blocks on it.
		sc := bufio.NewScanner(stdout)
		reported := false
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "REPORT "); ok && !reported {
				reported = true
				reports <- line
			}
		}
		if !reported {
			close(reports)
		}
		waited <- cmd.Wait()
	}()
	// The parent's copies are not needed once the child has its own.
	for _, f := range files {
		f.Close()
	}

	var line string
	select {
	case l, ok := <-reports:
		if !ok {
			t.Fatalf("the child reported nothing; exit %v; stderr:\n%s", <-waited, stderr.String())
		}
		line = l
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("no report from the child; stderr:\n%s", stderr.String())
	}
	var report childReport
	if err := json.Unmarshal([]byte(line), &report); err != nil {
		cmd.Process.Kill()
		t.Fatalf("child report %q: %v", line, err)
	}
	if report.PID != cmd.Process.Pid {
		t.Errorf("child pid %d, want %d: the wrapper did not exec in place", report.PID, cmd.Process.Pid)
	}
	if !slices.Equal(report.Listeners, want) {
		cmd.Process.Kill()
		t.Fatalf("child found\n  %+v\nwant\n  %+v", report.Listeners, want)
	}
	if len(report.Env) != 0 {
		t.Errorf("child still has %q", report.Env)
	}

	// The child answers once on each socket, with its pid.
	for _, l := range want {
		reply, err := ping(l.Network, l.Address, l.Name)
		if wantReply := fmt.Sprintf("pong %s %d", l.Name, report.PID); err != nil || reply != wantReply {
			t.Errorf("%s %s: %q, %v; want %q", l.Network, l.Address, reply, err, wantReply)
		}
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("child: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("child did not exit; stderr:\n%s", stderr.String())
	}
}

// ping sends "ping NAME" to addr and returns the reply line.
func ping(network, addr, name string) (string, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "ping %s\n", name); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(buf[:n]), "\n"), nil
}

// TestActivatedChild is the child of TestActivated; it does nothing
// unless run as one.
func TestActivatedChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("runs only as the child of TestActivated")
	}
	ls, err := Listeners()
	if err != nil {
		t.Fatal(err)
	}
	report := childReport{PID: os.Getpid(), Listeners: []childListener{}}
	for _, l := range ls {
		flags, err := unix.FcntlInt(l.File.Fd(), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		report.Listeners = append(report.Listeners, childListener{l.Name, l.Network, l.Address, int(l.File.Fd()), flags&unix.FD_CLOEXEC != 0})
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			report.Env = append(report.Env, k+"="+v)
		}
	}
	b, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("REPORT %s\n", b)

	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			defer l.File.Close()
			if err := pong(l); err != nil {
				t.Errorf("%s %s %s: %v", l.Name, l.Network, l.Address, err)
			}
		})
	}
	wg.Wait()
}

// pong answers one "ping NAME" on l with "pong NAME PID".
func pong(l Listener) error {
	deadline := time.Now().Add(20 * time.Second)
	buf := make([]byte, 512)
	answer := func(got []byte) []byte {
		name := strings.TrimSuffix(strings.TrimPrefix(string(got), "ping "), "\n")
		return fmt.Appendf(nil, "pong %s %d\n", name, os.Getpid())
	}
	if l.Network == "udp" {
		pc, err := net.FilePacketConn(l.File)
		if err != nil {
			return err
		}
		defer pc.Close()
		pc.SetDeadline(deadline)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		_, err = pc.WriteTo(answer(buf[:n]), from)
		return err
	}
	ln, err := net.FileListener(l.File)
	if err != nil {
		return err
	}
	defer ln.Close()
	if d, ok := ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(deadline)
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	_, err = c.Write(answer(buf[:n]))
	return err
}
