package kernel

import (
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

// TestWatchIgnoresNoOps: touching the executable, toggling its execute bit
// and rewriting identical bytes change its metadata but not its content, so
// no swap happens.
func TestWatchIgnoresNoOps(t *testing.T) {
	bin := probeBin(t, "v1")
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": bin})
	exe := filepath.Join(tk.dir, "plugins", "probe")
	before := tk.plugin("probe")
	now := time.Now().Add(time.Second)
	if err := os.Chtimes(exe, now, now); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(exe, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := os.Chmod(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	replace(t, bin, exe, false)
	replace(t, bin, exe, true)
	// Long enough for the debounce, the settle check and a swap.
	time.Sleep(2 * time.Second)
	after := tk.plugin("probe")
	if after.Generation != before.Generation || after.PID != before.PID || after.LastError != "" {
		t.Errorf("no-op changes swapped or failed: %+v (before %+v)", after, before)
	}
	if tk.logs.contains("plugin swapped") {
		t.Error("the log shows a swap")
	}
	// ctl reload swaps even an unchanged executable.
	r := tk.ctl("reload probe")
	if !r.OK || !strings.Contains(string(r.Data), `"generation":2`) {
		t.Errorf("ctl reload probe: %+v %s", r, r.Data)
	}
}

// TestWatchRealTools replaces the executable with the tools operators use:
// cp (rewrites in place), install (unlinks, writes, sets the mode last) and
// go build -o (writes the output file). Each is swapped in.
func TestWatchRealTools(t *testing.T) {
	bin := buildVersions(t, "v1", "v2", "v3", "v4")
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": bin["v1"]})
	exe := filepath.Join(tk.dir, "plugins", "probe")
	c := &http.Client{Timeout: 10 * time.Second}
	steps := []struct {
		version string
		cmd     []string
	}{
		{"v2", []string{"cp", bin["v2"], exe}},
		{"v3", []string{"install", "-m", "0755", bin["v3"], exe}},
		{"v4", []string{"sh", "-c", "cat " + bin["v4"] + " > " + exe}},
		{"v1", []string{"cp", "--remove-destination", bin["v1"], exe}},
	}
	for _, st := range steps {
		gen := tk.plugin("probe").Generation
		if out, err := exec.Command(st.cmd[0], st.cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", st.cmd, err, out)
		}
		testutil.WaitFor(t, 20*time.Second, st.version+" after "+st.cmd[0], func() bool {
			return tk.plugin("probe").Generation == gen+1
		})
		if p := tk.plugin("probe"); p.Version != st.version {
			t.Errorf("%v: version %s, want %s", st.cmd, p.Version, st.version)
		}
		if body := mustGet(t, c, tk.url("web")+"/"); !strings.HasPrefix(body, "probe "+st.version+" ") {
			t.Errorf("%v: answered %q", st.cmd, body)
		}
	}
}

// TestWatchDirectoryRecreated: the plugin directory is removed and made
// again (as `rm -rf bin && make build` does); the rescan watches it again
// and the new executable is swapped in.
func TestWatchDirectoryRecreated(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	tk := startKernelWith(t, probeConfig(""), map[string]string{"probe": bin["v1"]}, func(k *Kernel) { k.rescan = 300 * time.Millisecond })
	dir := filepath.Join(tk.dir, "plugins")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, bin["v2"], filepath.Join(dir, "probe"))
	testutil.WaitFor(t, 20*time.Second, "v2 after the directory came back", func() bool {
		return tk.plugin("probe").Version == "v2"
	})
}

// TestWatchChangeDuringStartup: an executable replaced while the kernel is
// still starting (another plugin holds up readiness) is swapped in.
func TestWatchChangeDuringStartup(t *testing.T) {
	cfg := `
[plugins.probe]
path = "plugins/probe"

[plugins.slow]
path = "plugins/hang"
start_timeout = "2s"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`
	v2 := probeBin(t, "v2")
	replaced := make(chan struct{})
	tk := startKernelWith(t, cfg, map[string]string{"probe": probeBin(t, "v1"), "hang": testdataBin(t, "hang")}, func(k *Kernel) {
		k.rescan = 300 * time.Millisecond
		go func() {
			defer close(replaced)
			// While "slow" holds up readiness (its start times out at 2s).
			time.Sleep(800 * time.Millisecond)
			replace(t, v2, filepath.Join(filepath.Dir(k.opts.ConfigPath), "plugins", "probe"), false)
		}()
	})
	<-replaced
	testutil.WaitFor(t, 10*time.Second, "v2 to be swapped in", func() bool { return tk.plugin("probe").Version == "v2" })
	if body := mustGet(t, &http.Client{Timeout: 5 * time.Second}, tk.url("web")+"/"); !strings.Contains(body, " v2 ") {
		t.Errorf("answered %q", body)
	}
}

// TestWatchSlowWriter: a file created under the watched name and written
// slowly (the Create that a rename would bring, then pauses) is not taken
// half-written: the one swap that happens is to the whole new version.
func TestWatchSlowWriter(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": bin["v1"]})
	exe := filepath.Join(tk.dir, "plugins", "probe")
	b, err := os.ReadFile(bin["v2"])
	if err != nil {
		t.Fatal(err)
	}
	gen := tk.plugin("probe").Generation
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	// Past the debounce of the removal, so that the Create comes first.
	time.Sleep(500 * time.Millisecond)
	f, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	// Longer than the quick debounce and settle, shorter than the full one.
	time.Sleep(100 * time.Millisecond)
	half := len(b) / 2
	if _, err := f.Write(b[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := f.Write(b[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "v2 after the slow write", func() bool {
		return tk.plugin("probe").Generation == gen+1
	})
	// Give a second, wrong swap the time to happen.
	time.Sleep(500 * time.Millisecond)
	p := tk.plugin("probe")
	if p.Version != "v2" || p.Generation != gen+1 {
		t.Fatalf("after the slow write: version %s generation %d, want v2 at %d", p.Version, p.Generation, gen+1)
	}
	if strings.Contains(tk.logs.String(), "swap failed") {
		t.Errorf("a half-written file was tried:\n%s", tk.logs.String())
	}
}

// TestWatchRewrittenWhileRead: a new executable renamed into place is
// rewritten in place (cp over it) just as the kernel opens it, so the kernel
// finds it truncated. That is a writer at work, not a bad file: no swap
// failure is recorded, and the finished file is swapped in.
func TestWatchRewrittenWhileRead(t *testing.T) {
	bin := buildVersions(t, "v1", "v2")
	v2, err := os.ReadFile(bin["v2"])
	if err != nil {
		t.Fatal(err)
	}
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": bin["v1"]})
	exe := filepath.Join(tk.dir, "plugins", "probe")
	gen := tk.plugin("probe").Generation
	var once sync.Once
	finished := make(chan struct{})
	hook := func(path string) {
		if path != exe {
			return
		}
		once.Do(func() {
			// cp's first write: truncated, half there.
			if err := os.WriteFile(exe, v2[:len(v2)/2], 0o755); err != nil {
				t.Error(err)
			}
			go func() {
				defer close(finished)
				// A pause shorter than the debounce: the watcher
				// never sees the half file stand still.
				time.Sleep(100 * time.Millisecond)
				f, err := os.OpenFile(exe, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				if _, err := f.Write(v2[len(v2)/2:]); err != nil {
					t.Error(err)
				}
			}()
		})
	}
	testHookSnapshotOpened.Store(&hook)
	defer testHookSnapshotOpened.Store(nil)
	replace(t, bin["v2"], exe, false)
	testutil.WaitFor(t, 20*time.Second, "v2 after the rewrite", func() bool {
		return tk.plugin("probe").Generation == gen+1
	})
	<-finished
	p := tk.plugin("probe")
	if p.Version != "v2" || p.SwapFailures != 0 || p.LastError != "" {
		t.Errorf("after the rewrite: version %s, %d swap failures, last error %q; want v2 and none",
			p.Version, p.SwapFailures, p.LastError)
	}
	if !tk.logs.contains("still being written") {
		t.Error("the kernel never met the half-written file; the test did not test it")
	}
}

// TestWatcherMoving: a file is moving while it has events pending or
// differs from what the watcher last reported, and still once reported.
func TestWatcherMoving(t *testing.T) {
	w, err := newWatcher(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer w.fsw.Close()
	p := filepath.Join(t.TempDir(), "exe")
	if err := os.WriteFile(p, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !w.moving(p) {
		t.Error("a file never reported is moving")
	}
	id, _, err := statID(p)
	if err != nil {
		t.Fatal(err)
	}
	w.seen[p] = id
	if w.moving(p) {
		t.Error("the file as reported is moving")
	}
	w.pending[p] = &pendingFile{}
	if !w.moving(p) {
		t.Error("a file with events pending is not moving")
	}
	delete(w.pending, p)
	if err := os.WriteFile(p, []byte("two, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !w.moving(p) {
		t.Error("a file rewritten since it was reported is not moving")
	}
}
