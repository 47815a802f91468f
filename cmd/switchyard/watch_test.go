package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// watchProc is a running `switchyard ctl watch`.
type watchProc struct {
	cmd    *exec.Cmd
	stdout *testutil.SyncBuffer
	stderr *testutil.SyncBuffer
	done   chan struct{}
	code   int
}

func (k *kproc) startWatch(args ...string) *watchProc {
	k.t.Helper()
	w := &watchProc{stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	w.cmd = exec.Command(k.bin, append([]string{"ctl", "-socket", k.socket, "watch"}, args...)...)
	w.cmd.Env = testEnv()
	w.cmd.Stdout, w.cmd.Stderr = w.stdout, w.stderr
	if err := w.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	go func() {
		err := w.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			w.code = ee.ExitCode()
		} else if err != nil {
			w.code = -1
		}
		close(w.done)
	}()
	k.t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// wait waits for the watch to exit and returns its exit code.
func (w *watchProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-w.done:
		return w.code
	case <-time.After(60 * time.Second):
		t.Fatalf("ctl watch did not exit\nstdout:\n%s\nstderr:\n%s", w.stdout.String(), w.stderr.String())
		return 0
	}
}

// traffic sends GETs to url, one after another, until the function it
// returns is called.
func traffic(t *testing.T, url string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	client := &http.Client{Transport: &http.Transport{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			if res, err := client.Do(req); err == nil {
				res.Body.Close()
			} else if ctx.Err() == nil {
				t.Errorf("GET %s: %v", url, err)
				return
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		client.CloseIdleConnections()
	}
}

// cellOf returns the cell under column head in the row of a table in text
// that starts with name, or "" when there is none. The tables' cells hold
// no spaces here.
func cellOf(text, head, name string) string {
	var heads []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "NAME":
			heads = f
		case len(f) > 0 && len(f) == len(heads) && f[0] == name:
			for i, h := range heads {
				if h == head {
					return f[i]
				}
			}
		}
	}
	return ""
}

// TestCtlWatch runs `ctl watch` against a real kernel: two frames, with
// rates once there was traffic between them; one JSON object a frame; exit
// 0 on SIGINT and SIGTERM; exit 1 when the kernel goes away.
func TestCtlWatch(t *testing.T) {
	dir := layout(t)
	k := startServe(t, dir, probeOnly)
	k.ready()
	url := k.url("web") + "/"

	t.Run("frames", func(t *testing.T) {
		w := k.startWatch("-n", "2", "-interval", "2s")
		testutil.WaitFor(t, 30*time.Second, "the first frame", func() bool { return strings.Contains(w.stdout.String(), "probe") })
		stop := traffic(t, url)
		code := w.wait(t)
		stop()
		out := w.stdout.String()
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, w.stderr.String(), out)
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("escape codes written to a pipe:\n%q", out)
		}
		frames := strings.Split(out, "\n\nswitchyard  ")
		if len(frames) != 2 || !strings.HasPrefix(frames[0], "switchyard  ") {
			t.Fatalf("want two frames separated by a blank line:\n%s", out)
		}
		for i, f := range frames {
			// The first line is the frame's time.
			stamp, _, _ := strings.Cut(strings.TrimPrefix(f, "switchyard  "), "\n")
			if _, err := time.Parse(time.RFC3339, stamp); err != nil {
				t.Errorf("frame %d: time %q: %v", i, stamp, err)
			}
			for _, want := range []string{"uptime:", "listeners:", "REQ/S", "plugins:", "SERVED/S"} {
				if !strings.Contains(f, want) {
					t.Errorf("frame %d lacks %q:\n%s", i, want, f)
				}
			}
			if cellOf(f, "PROTOCOL", "web") != "http" || cellOf(f, "STATE", "probe") != "serving" {
				t.Errorf("frame %d lacks the web listener or the probe plugin:\n%s", i, f)
			}
		}
		if r := cellOf(frames[0], "REQ/S", "web"); r != "-" {
			t.Errorf("first frame's rate %q, want -", r)
		}
		for _, c := range []struct{ head, name string }{{"REQ/S", "web"}, {"SERVED/S", "probe"}} {
			r, err := strconv.ParseFloat(cellOf(frames[1], c.head, c.name), 64)
			if err != nil || r <= 0 {
				t.Errorf("second frame's %s of %s is %q, want a positive rate after traffic:\n%s", c.head, c.name, cellOf(frames[1], c.head, c.name), frames[1])
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		w := k.startWatch("-n", "2", "-interval", "1s", "-json")
		testutil.WaitFor(t, 30*time.Second, "the first frame", func() bool { return strings.Contains(w.stdout.String(), "\n") })
		stop := traffic(t, url)
		code := w.wait(t)
		stop()
		if code != 0 {
			t.Fatalf("exit %d: %s", code, w.stderr.String())
		}
		type frame struct {
			Status struct {
				UptimeS   float64 `json:"uptime_s"`
				Listeners []struct {
					Name     string  `json:"name"`
					Requests float64 `json:"requests"`
				} `json:"listeners"`
			} `json:"status"`
			Rates struct {
				Listeners map[string]*float64 `json:"listeners"`
				Plugins   map[string]*float64 `json:"plugins"`
			} `json:"rates"`
		}
		var fs []frame
		dec := json.NewDecoder(bytes.NewReader([]byte(w.stdout.String())))
		for dec.More() {
			var f frame
			if err := dec.Decode(&f); err != nil {
				t.Fatalf("%v:\n%s", err, w.stdout.String())
			}
			fs = append(fs, f)
		}
		if len(fs) != 2 || len(fs[0].Status.Listeners) != 1 || len(fs[1].Status.Listeners) != 1 {
			t.Fatalf("want two frames with the web listener:\n%s", w.stdout.String())
		}
		if r, ok := fs[0].Rates.Listeners["web"]; !ok || r != nil {
			t.Errorf("first frame's web rate %v, want null", r)
		}
		r := fs[1].Rates.Listeners["web"]
		want := (fs[1].Status.Listeners[0].Requests - fs[0].Status.Listeners[0].Requests) / (fs[1].Status.UptimeS - fs[0].Status.UptimeS)
		if r == nil || want <= 0 || math.Abs(*r-want) > 1e-9*want {
			t.Errorf("second frame's web rate %v, want %v (requests over uptime):\n%s", r, want, w.stdout.String())
		}
		if p := fs[1].Rates.Plugins["probe"]; p == nil || *p <= 0 {
			t.Errorf("second frame's probe rate %v, want positive", p)
		}
	})

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			w := k.startWatch("-interval", "100ms")
			testutil.WaitFor(t, 30*time.Second, "a frame", func() bool { return strings.Contains(w.stdout.String(), "probe") })
			if err := w.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := w.wait(t); code != 0 || w.stderr.String() != "" {
				t.Errorf("after %v: exit %d, stderr %q", sig, code, w.stderr.String())
			}
		})
	}

	t.Run("kernel goes away", func(t *testing.T) {
		w := k.startWatch("-interval", "100ms")
		testutil.WaitFor(t, 30*time.Second, "a frame", func() bool { return strings.Contains(w.stdout.String(), "probe") })
		if _, errOut, code := k.ctl("shutdown"); code != 0 {
			t.Fatalf("ctl shutdown: %d %s", code, errOut)
		}
		if code := w.wait(t); code != 1 || !strings.Contains(w.stderr.String(), "switchyard ctl watch: the kernel went away") {
			t.Errorf("after the kernel left: exit %d, stderr %q", code, w.stderr.String())
		}
		k.wait(30 * time.Second)
	})
}

// TestCtlWatchUsage: bad watch flags are usage errors, before any dial.
func TestCtlWatchUsage(t *testing.T) {
	bin := bins.Build(t, "switchyard", "./cmd/switchyard", "v1")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "-1"}, "-n not negative"},
		{[]string{"-interval", "0s"}, "-interval must be positive"},
		{[]string{"-interval", "soon"}, "invalid value"},
		{[]string{"now"}, `unexpected argument "now"`},
	} {
		cmd := exec.Command(bin, append([]string{"ctl", "-socket", filepath.Join(t.TempDir(), "none.sock"), "watch"}, tt.args...)...)
		cmd.Env = testEnv()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tt.want) {
			t.Errorf("ctl watch %v: %v %q; want exit 2 mentioning %q", tt.args, err, out, tt.want)
		}
	}
}
