package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/systemd"
	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// notifySocket is the service manager's end of sd_notify: a datagram socket
// whose messages the test reads.
type notifySocket struct {
	c    *net.UnixConn
	path string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{c: c, path: path}
}

// expect reads messages until one contains want.
func (n *notifySocket) expect(t *testing.T, want string) string {
	t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n.c.SetReadDeadline(deadline)
		k, _, err := n.c.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("waiting for %q from the kernel: %v", want, err)
		}
		if msg := string(buf[:k]); strings.Contains(msg, want) {
			return msg
		}
	}
}

// TestSocketActivation plays systemd's part: it binds an HTTP socket and a
// DNS pair (stream and datagram, one name) itself, passes them to `switchyard
// serve` with LISTEN_FDS and LISTEN_FDNAMES, and reads NOTIFY_SOCKET. The
// kernel serves on the passed sockets (the configuration's addresses are
// port 0 and never bound), reports READY=1, RELOADING=1 around a reload,
// and STOPPING=1.
func TestSocketActivation(t *testing.T) {
	dir := layout(t)
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsUDP, err := net.ListenPacket("udp", dnsTCP.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	webAddr, dnsAddr := web.Addr().String(), dnsTCP.Addr().String()
	var files []*os.File
	for _, s := range []interface{ File() (*os.File, error) }{web.(*net.TCPListener), dnsTCP.(*net.TCPListener), dnsUDP.(*net.UDPConn)} {
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	web.Close()
	dnsTCP.Close()
	dnsUDP.Close()
	notify := newNotifySocket(t)
	cfg := `
[plugins.probe]
path = "bin/plugins/probe"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"

[[listeners]]
name = "dns"
protocol = "dns"
address = "127.0.0.1:0"
plugin = "probe"
`
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := testutil.ShortDir(t)
	socket := filepath.Join(run, "admin.sock")
	cmd := exec.Command(filepath.Join(dir, "bin", "switchyard"), "serve", "-config", filepath.Join(dir, "config.toml"),
		"-data", filepath.Join(dir, "state"), "-socket", socket, "-log-level", "debug")
	cmd.Env = testEnv("XDG_RUNTIME_DIR="+run, "NOTIFY_SOCKET="+notify.path)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := systemd.Activate(cmd, files, []string{"web", "dns", "dns"}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("kernel stderr:\n%s", stderr.String())
		}
	})
	notify.expect(t, "READY=1")
	k := &kproc{t: t, dir: dir, bin: filepath.Join(dir, "bin", "switchyard"), socket: socket, stderr: stderr}
	k.ready()
	if got, got2 := k.bound("web"), k.bound("dns"); got != webAddr || got2 != dnsAddr {
		t.Fatalf("listeners serve on %s and %s, want the passed %s and %s", got, got2, webAddr, dnsAddr)
	}
	if body := httpGet(t, "http://"+k.bound("web")+"/"); !strings.HasPrefix(body, "probe v1 pid ") {
		t.Fatalf("GET on the passed socket: %q", body)
	}
	for _, net := range []string{"udp", "tcp"} {
		q := new(dns.Msg)
		q.SetQuestion("activated.test.", dns.TypeTXT)
		r, _, err := (&dns.Client{Net: net, Timeout: 10 * time.Second}).Exchange(q, k.bound("dns"))
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("DNS over %s on the passed sockets: %v %v", net, r, err)
		}
	}
	if out, _, code := k.ctl("reload-config"); code != 0 {
		t.Fatalf("reload-config: %s", out)
	}
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	k.ctl("shutdown")
	notify.expect(t, "STOPPING=1")
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the kernel did not exit")
	}
}
