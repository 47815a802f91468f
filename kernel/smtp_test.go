package kernel

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

func smtpBin(t testing.TB, version string) string {
	return bins.Build(t, "smtp-"+version, "./plugins/smtp", version)
}

// requireTool returns the path of a client the test drives; without it the
// test fails under CI (which installs it from pkg) and is skipped elsewhere.
func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: CI must install %s", name, pkg)
		}
		t.Skipf("%s not installed (Debian: %s)", name, pkg)
	}
	return p
}

const smtpConfig = `
[plugins.smtp]
path = "plugins/smtp"
start_timeout = "10s"
call_timeout = "10s"
[plugins.smtp.settings]
hostname = "mx.switchyard.test"
max_size = 65536

[[listeners]]
name = "mail"
protocol = "line"
address = "127.0.0.1:0"
plugin = "smtp"
max_line = 1000
`

var queuedAs = regexp.MustCompile(`250 2\.0\.0 Ok: queued as (\S+)`)

// message reads a stored message back over the admin socket, as an
// operator would with `ctl state get`.
func (tk *testKernel) message(id string) string {
	tk.t.Helper()
	r := tk.ctl("state get smtp/messages/" + id)
	var v StateValue
	if !r.OK || json.Unmarshal(r.Data, &v) != nil {
		tk.t.Fatalf("state get smtp/messages/%s: %s %s", id, r.Data, r.Error)
	}
	return v.Value
}

// TestSMTPSwaks sends mail with swaks, a real SMTP client, and reads the
// stored message back with `ctl state get`.
func TestSMTPSwaks(t *testing.T) {
	swaks := requireTool(t, "swaks", "swaks")
	tk := startKernel(t, smtpConfig, map[string]string{"smtp": smtpBin(t, "v1")})
	cmd := exec.Command(swaks, "--server", tk.bound("mail"), "--helo", "client.test",
		"--from", "alice@example.test", "--to", "bob@example.test,carol@example.test",
		"--header", "Subject: swaks through switchyard",
		"--body", "first line\n.a line that starts with a dot\nlast line\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m := queuedAs.FindSubmatch(out)
	if m == nil {
		t.Fatalf("swaks saw no 250 queued reply:\n%s", out)
	}
	msg := tk.message(string(m[1]))
	for _, want := range []string{
		"Return-Path: <alice@example.test>",
		"Received: from client.test",
		"Subject: swaks through switchyard",
		"\r\n.a line that starts with a dot\r\n", // unstuffed once by the kernel
		"last line",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("stored message lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(string(out), "250-SIZE 65536") {
		t.Errorf("EHLO did not advertise SIZE 65536:\n%s", out)
	}

	// A message over the size limit is refused, and nothing is stored.
	before := tk.ctl("state list smtp/messages/")
	cmd = exec.Command(swaks, "--server", tk.bound("mail"), "--from", "a@example.test", "--to", "b@example.test",
		"--body", strings.Repeat("0123456789abcdef\n", 5000))
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), "552") {
		t.Errorf("an oversize message was not refused with 552:\n%s", out)
	}
	if after := tk.ctl("state list smtp/messages/"); string(after.Data) != string(before.Data) {
		t.Errorf("an oversize message was stored: %s", after.Data)
	}
}

// smtplibScript is a Python smtplib session that stops between MAIL FROM /
// RCPT TO and DATA until its standard input says go: the test swaps the
// plugin there.
const smtplibScript = `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
code, _ = s.ehlo("python.test")
assert code == 250, code
code, msg = s.mail("py@example.test")
assert code == 250, (code, msg)
code, msg = s.rcpt("dest@example.test")
assert code == 250, (code, msg)
print("PAUSED", flush=True)
sys.stdin.readline()
code, msg = s.data(b"Subject: across a swap\r\n\r\nsent by smtplib, interrupted by a swap\r\n")
print(code, msg.decode(), flush=True)
s.quit()
`

// TestSMTPSessionAcrossSwap: a Python smtplib session pauses between RCPT
// TO and DATA while the plugin is swapped for a new version; the
// transaction completes on the new version and the message is stored.
func TestSMTPSessionAcrossSwap(t *testing.T) {
	python := requireTool(t, "python3", "python3")
	bin := map[string]string{"v1": smtpBin(t, "v1"), "v2": smtpBin(t, "v2")}
	tk := startKernel(t, smtpConfig, map[string]string{"smtp": bin["v1"]})
	host, port, _ := strings.Cut(tk.bound("mail"), ":")
	script := filepath.Join(t.TempDir(), "session.py")
	if err := os.WriteFile(script, []byte(smtplibScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, script, host, port)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || line != "PAUSED\n" {
		t.Fatalf("smtplib: %q %v\n%s", line, err, stderr.String())
	}
	replace(t, bin["v2"], filepath.Join(tk.dir, "plugins", "smtp"), false)
	testutil.WaitFor(t, 30*time.Second, "generation 2", func() bool {
		p := tk.plugin("smtp")
		return p.Generation == 2 && p.Version == "v2"
	})
	fmt.Fprintln(stdin, "go")
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("smtplib: %v\n%s\n%s", err, rest, stderr.String())
	}
	m := queuedAs.FindStringSubmatch("250 " + strings.TrimPrefix(string(rest), "250 "))
	if m == nil {
		t.Fatalf("DATA after the swap answered %q", rest)
	}
	msg := tk.message(m[1])
	if !strings.Contains(msg, "Return-Path: <py@example.test>") || !strings.Contains(msg, "interrupted by a swap") {
		t.Fatalf("stored message:\n%s", msg)
	}
	// The envelope, written by v2, has the recipient v1 accepted.
	r2 := tk.ctl("state get smtp/envelopes/" + m[1])
	if !r2.OK || !strings.Contains(string(r2.Data), "dest@example.test") {
		t.Fatalf("envelope: %s %s", r2.Data, r2.Error)
	}
}
