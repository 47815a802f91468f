package scaffold

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/internal/testbin"
	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/kernel"
	"github.com/switchyard-dev/switchyard/kernel/admin"
)

// generated is one scaffolded plugin of TestGenerated.
type generated struct {
	name, protocols string
	inModule        bool
	res             *Result
	pkg             string // as go vet and go test name it, in res.BuildDir
}

// TestGenerated scaffolds a plugin of each protocol, outside the module (a
// go.mod replacing switchyard with this checkout) and one inside it, runs
// go vet and go test on each, builds each with its README's command, then
// runs them all under one real kernel, configured with the TOML the
// scaffold printed, and talks to each with a real client. The HTTP plugin
// is then swapped with its README's line.
func TestGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("builds seven plugins")
	}
	root := bins.Root()
	inTree, err := os.MkdirTemp(filepath.Join(root, "internal", "scaffold"), "_test-") // the go command skips _ folders in ./...
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(inTree) })
	outside := t.TempDir()
	plugins := []*generated{
		{name: "web", protocols: "http"},
		{name: "gateway", protocols: "scgi"},
		{name: "resolver", protocols: "dns"},
		{name: "talk", protocols: "line"},
		{name: "beat", protocols: "timer"},
		{name: "duo", protocols: "line,timer"},
		{name: "tree", protocols: "http", inModule: true},
	}
	binDir := t.TempDir()
	// No network, and a go.mod that needs no update: the scaffold's go.mod
	// and go.sum are complete.
	env := append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	if testbin.Race {
		env = append(env, "GOFLAGS=-mod=readonly -buildvcs=false -race")
	}
	var config strings.Builder
	for _, g := range plugins {
		ps, err := ParseProtocols(g.protocols)
		if err != nil {
			t.Fatal(err)
		}
		o := Options{Name: g.name, Protocols: ps, Dir: filepath.Join(outside, g.name), Checkout: root}
		if g.inModule {
			o = Options{Name: g.name, Protocols: ps, Dir: filepath.Join(inTree, g.name)}
		}
		if g.res, err = New(o); err != nil {
			t.Fatal(err)
		}
		if g.res.InModule != g.inModule {
			t.Fatalf("%s: InModule %v", g.name, g.res.InModule)
		}
		g.pkg = "./..."
		if g.inModule {
			rel, _ := filepath.Rel(root, g.res.Dir)
			g.pkg = "./" + filepath.ToSlash(rel)
		}
		run(t, env, g.res.BuildDir, "go", "vet", g.pkg)
		if out := run(t, env, g.res.BuildDir, "go", "test", "-count=1", g.pkg); !strings.Contains(out, "ok ") {
			t.Fatalf("%s: go test: %s", g.name, out)
		}
		cfg := g.res.Config
		if g.inModule {
			// The README builds into the checkout's bin/plugins; a test
			// writes elsewhere.
			bin := filepath.Join(binDir, g.name)
			run(t, env, root, "go", "build", "-ldflags", "-X main.version=v1", "-o", bin, g.pkg)
			cfg = strings.Replace(cfg, `path = "`+g.res.Binary+`"`, `path = "`+bin+`"`, 1)
		} else {
			run(t, env, g.res.BuildDir, "sh", "-c", g.res.Build)
		}
		config.WriteString(cfg + "\n\n")
	}
	// Every listener on a port of its own; the timers quick.
	cfg := regexp.MustCompile(`address = "[^"]*"`).ReplaceAllString(config.String(), `address = "127.0.0.1:0"`)
	cfg = strings.ReplaceAll(cfg, `every = "10s"`, `every = "50ms"`)
	k := startKernel(t, cfg)
	addr := func(listener string) string {
		for _, l := range k.Listeners() {
			if l.Name == listener {
				return l.Bound
			}
		}
		t.Fatalf("no listener %s in %+v", listener, k.Listeners())
		return ""
	}

	if body := get(t, "http://"+addr("web")+"/"); body != "hello from web v1\n" {
		t.Errorf("web: GET / = %q", body)
	}
	if body := get(t, "http://"+addr("tree")+"/"); body != "hello from tree v1\n" {
		t.Errorf("tree: GET / = %q", body)
	}
	if answer := scgiGet(t, addr("gateway")); !strings.HasPrefix(answer, "Status: 200 OK\r\n") || !strings.HasSuffix(answer, "\r\n\r\nhello from gateway v1\n") {
		t.Errorf("gateway: SCGI GET / = %q", answer)
	}
	q := new(dns.Msg)
	q.SetQuestion("hello.example.", dns.TypeTXT)
	r, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, addr("resolver"))
	if err != nil || len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), `"hello from resolver v1"`) {
		t.Errorf("resolver: TXT hello.example: %v %v", r, err)
	}
	for _, name := range []string{"talk", "duo"} {
		lineSession(t, addr(name), "hello from "+name+" v1")
	}
	for _, name := range []string{"beat", "duo"} {
		key := name + "/ticks/" + name
		testutil.WaitFor(t, 30*time.Second, key+" in the store", func() bool {
			v, err := k.Handle(t.Context(), admin.Command{Name: "state get", Args: []string{key}})
			return err == nil && v.(kernel.StateValue).Value != ""
		})
	}

	// The swap, as the README says: build v2 beside, rename over.
	web := plugins[0]
	run(t, env, web.res.BuildDir, "sh", "-c", web.res.Swap)
	testutil.WaitFor(t, 60*time.Second, "web v2", func() bool {
		return get(t, "http://"+addr("web")+"/") == "hello from web v2\n"
	})
}

// run runs a command in dir and returns its output, failing the test if it
// fails.
func run(t *testing.T, env []string, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// startKernel runs a kernel in this process on cfg, with real plugin
// processes, until the test ends.
func startKernel(t *testing.T, cfg string) *kernel.Kernel {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := testutil.ShortDir(t)
	env := map[string]string{"XDG_RUNTIME_DIR": run, "GORACE": "atexit_sleep_ms=0"}
	logs := &testutil.SyncBuffer{}
	k, err := kernel.New(kernel.Options{
		ConfigPath: cfgPath,
		DataDir:    filepath.Join(dir, "state"),
		Socket:     filepath.Join(run, "admin.sock"),
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Version:    "test",
		Getenv:     func(k string) string { return env[k] },
	})
	if err != nil {
		t.Fatalf("%v\nconfig:\n%s", err, cfg)
	}
	done := make(chan error, 1)
	go func() { done <- k.Run(context.Background()) }()
	t.Cleanup(func() {
		k.Shutdown()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kernel: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("the kernel did not stop within 60s")
		}
		if t.Failed() {
			t.Logf("kernel log:\n%s", logs.String())
		}
	})
	select {
	case <-k.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("kernel did not start: %v\nconfig:\n%s\nlog:\n%s", err, cfg, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("kernel not ready after 60s\n%s", logs.String())
	}
	return k
}

func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", url, res.StatusCode, b, err)
	}
	return string(b)
}

// scgiGet sends GET / to an SCGI listener, by hand: a netstring of
// headers, then the (empty) body, and reads the whole answer.
func scgiGet(t *testing.T, addr string) string {
	t.Helper()
	c := dial(t, addr)
	hdr := "CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00REQUEST_URI\x00/\x00"
	if _, err := fmt.Fprintf(c, "%d:%s,", len(hdr), hdr); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("SCGI answer %q: %v", b, err)
	}
	return string(b)
}

// lineSession talks to a line listener over TCP: the greeting, two counted
// lines, then quit.
func lineSession(t *testing.T, addr, greeting string) {
	t.Helper()
	c := dial(t, addr)
	r := bufio.NewReader(c)
	expect := func(want string) {
		t.Helper()
		line, err := r.ReadString('\n')
		if err != nil || line != want+"\r\n" {
			t.Fatalf("%s: read %q, %v; want %q", addr, line, err, want)
		}
	}
	expect(greeting)
	fmt.Fprint(c, "one\r\ntwo words\n")
	expect("#1 one")
	expect("#2 two words")
	fmt.Fprint(c, "quit\r\n")
	expect("bye")
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("%s: after bye: %q %v, want the connection closed", addr, rest, err)
	}
}

// dial connects to addr over TCP for at most 30 seconds of talk; the
// connection is closed when the test ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}
