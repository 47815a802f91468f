package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// statusJSON is a status reply's data with the given counters.
func statusJSON(pid int, uptime float64, requests, served int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"version":"v1","pid":%d,"uptime_s":%g,"connections":2,"config":"/etc/sy.toml",
		"listeners":[{"name":"web","protocol":"http","address":"127.0.0.1:8080","plugin":"hello","connections":2,"accepted":9,"requests":%d,"errors":0,"refused":0}],
		"plugins":[{"name":"hello","pid":77,"generation":1,"version":"v1","state":"serving","inflight":0,"served":%d,"errors":0,"restarts":0}]}`,
		pid, uptime, requests, served))
}

func TestRater(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var r Rater
	frame := func(at time.Time, status json.RawMessage) Frame {
		t.Helper()
		f, err := r.Frame(at, status)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := frame(t0, statusJSON(1, 10, 100, 50)); len(f.ListenerRates) != 0 || len(f.PluginRates) != 0 {
		t.Errorf("first frame has rates: %+v", f)
	}
	// The kernel's uptime is the clock, not the time the reply arrived.
	f := frame(t0.Add(3*time.Second), statusJSON(1, 12, 150, 60))
	if f.ListenerRates["web"] != 25 || f.PluginRates["hello"] != 5 {
		t.Errorf("rates %v %v, want web 25 and hello 5", f.ListenerRates, f.PluginRates)
	}
	// A counter that went back has no rate.
	f = frame(t0.Add(4*time.Second), statusJSON(1, 13, 160, 0))
	if f.ListenerRates["web"] != 10 {
		t.Errorf("web rate %v, want 10", f.ListenerRates)
	}
	if r, ok := f.PluginRates["hello"]; ok {
		t.Errorf("hello has rate %v after its counter went back", r)
	}
	// Another kernel (an upgrade, a restart): no rates.
	if f = frame(t0.Add(5*time.Second), statusJSON(2, 14, 170, 10)); len(f.ListenerRates) != 0 {
		t.Errorf("rates across kernels: %v", f.ListenerRates)
	}
	// Without uptime_s, the time between frames.
	var r2 Rater
	noUptime := func(requests int) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"pid":1,"listeners":[{"name":"web","requests":%d}],"plugins":[]}`, requests))
	}
	if _, err := r2.Frame(t0, noUptime(0)); err != nil {
		t.Fatal(err)
	}
	if f, err := r2.Frame(t0.Add(2*time.Second), noUptime(8)); err != nil || f.ListenerRates["web"] != 4 {
		t.Errorf("rate by wall clock: %v %v, want 4", f.ListenerRates, err)
	}
	if _, err := r2.Frame(t0, json.RawMessage(`[1]`)); err == nil {
		t.Error("a status that is not an object made a frame")
	}
}

func TestRenderFrame(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)
	var r Rater
	if _, err := r.Frame(at.Add(-time.Second), statusJSON(1, 10, 100, 50)); err != nil {
		t.Fatal(err)
	}
	f, err := r.Frame(at, statusJSON(1, 12, 133, 50))
	if err != nil {
		t.Fatal(err)
	}
	// A plugin that appeared since the previous frame has no rate yet.
	f.Status = json.RawMessage(strings.Replace(string(f.Status), `"plugins":[`,
		`"plugins":[{"name":"new","state":"starting","served":3},`, 1))
	var b bytes.Buffer
	if err := RenderFrame(&b, f); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, filepath.Join("testdata", "render", "watch_frame.golden"), b.Bytes())

	j, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Time   time.Time      `json:"time"`
		Status map[string]any `json:"status"`
		Rates  struct {
			Listeners map[string]*float64 `json:"listeners"`
			Plugins   map[string]*float64 `json:"plugins"`
		} `json:"rates"`
	}
	if err := json.Unmarshal(j, &got); err != nil {
		t.Fatalf("%v: %s", err, j)
	}
	if !got.Time.Equal(at) || got.Status["pid"] != 1.0 || got.Rates.Listeners["web"] == nil || *got.Rates.Listeners["web"] != 16.5 ||
		got.Rates.Plugins["hello"] == nil || *got.Rates.Plugins["hello"] != 0 {
		t.Errorf("JSON frame %s", j)
	}
	if r, ok := got.Rates.Plugins["new"]; !ok || r != nil {
		t.Errorf("the new plugin's rate should be null: %s", j)
	}
}

// counting answers status with counters that grow by 10 requests and 5
// served per call, and one uptime second per call.
type counting struct {
	calls atomic.Int64
}

func (c *counting) Handle(_ context.Context, cmd Command) (any, error) {
	if cmd.Name != "status" {
		return nil, fmt.Errorf("unexpected %s", cmd.Name)
	}
	n := int(c.calls.Add(1))
	return statusJSON(1, float64(n), 10*n, 5*n), nil
}

func TestWatch(t *testing.T) {
	ts := startServer(t, &counting{})
	ctx := t.Context()

	t.Run("count, plain", func(t *testing.T) {
		var out bytes.Buffer
		if err := Watch(ctx, ts.path, WatchOptions{Interval: time.Millisecond, Count: 3}, &out); err != nil {
			t.Fatal(err)
		}
		frames := strings.Split(out.String(), "\n\nswitchyard  ")
		if len(frames) != 3 || !strings.HasPrefix(out.String(), "switchyard  ") || strings.Contains(out.String(), "\x1b") {
			t.Fatalf("want 3 frames separated by blank lines, no escapes:\n%s", out.String())
		}
		// Each call adds 10 requests in one uptime second.
		for i, f := range frames {
			want := "  10.0 "
			if i == 0 {
				want = "  -  "
			}
			if !strings.Contains(f, want) {
				t.Errorf("frame %d lacks %q:\n%s", i, want, f)
			}
		}
	})
	t.Run("clear", func(t *testing.T) {
		var out bytes.Buffer
		if err := Watch(ctx, ts.path, WatchOptions{Interval: time.Millisecond, Count: 2, Clear: true}, &out); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out.String(), clearScreen+"switchyard  "); n != 2 {
			t.Fatalf("%d frames start by clearing the screen, want 2:\n%q", n, out.String())
		}
	})
	t.Run("json", func(t *testing.T) {
		var out bytes.Buffer
		if err := Watch(ctx, ts.path, WatchOptions{Interval: time.Millisecond, Count: 2, JSON: true}, &out); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], `"web":null`) || !strings.Contains(lines[1], `"web":10`) {
			t.Fatalf("want two JSON lines, the second with a rate:\n%s", out.String())
		}
	})
	t.Run("until cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		out := &testutil.SyncBuffer{}
		done := make(chan error, 1)
		go func() { done <- Watch(ctx, ts.path, WatchOptions{Interval: time.Hour}, out) }()
		testutil.WaitFor(t, 10*time.Second, "the first frame", func() bool { return strings.Contains(out.String(), "plugins:") })
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Watch after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Watch did not return after its context ended")
		}
	})
}

func TestWatchNoKernel(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "admin.sock")
	err := Watch(t.Context(), path, WatchOptions{Count: 1}, &bytes.Buffer{})
	var nk *NoKernelError
	if !errors.As(err, &nk) || nk.Path != path || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Watch with no kernel: %v", err)
	}
}

// TestWatchKernelGone: when the server goes away for good, Watch returns
// ErrGone.
func TestWatchKernelGone(t *testing.T) {
	ts := startServer(t, &counting{})
	out := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Watch(t.Context(), ts.path, WatchOptions{Interval: 10 * time.Millisecond}, out) }()
	testutil.WaitFor(t, 10*time.Second, "the first frame", func() bool { return strings.Contains(out.String(), "plugins:") })
	ts.cancel()
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrGone) {
			t.Fatalf("Watch: %v, want ErrGone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not notice the kernel went away")
	}
}

// TestWatchRedials: a kernel that hangs up while the socket still answers
// (an upgraded kernel took it over) is dialled again, and the watch goes
// on.
func TestWatchRedials(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	status := &counting{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for conn := 0; ; conn++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				// The first connection answers twice, then hangs up.
				for i := 0; conn > 0 || i < 2; i++ {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					data, _ := status.Handle(context.Background(), Command{Name: "status"})
					b, _ := json.Marshal(Reply{OK: true, Data: data.(json.RawMessage)})
					if _, err := c.Write(append(b, '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	var out bytes.Buffer
	if err := Watch(t.Context(), path, WatchOptions{Interval: time.Millisecond, Count: 5}, &out); err != nil {
		t.Fatalf("Watch: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "plugins:"); n != 5 {
		t.Fatalf("%d frames, want 5:\n%s", n, out.String())
	}
}
