package state

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTemp opens a store in a fresh file, closed when the test ends.
func openTemp(t testing.TB) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestBoltOpenMode(t *testing.T) {
	_, path := openTemp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %v, want 0600", m)
	}
}

func TestBoltOpenMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "store.db")
	s, err := Open(path, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open in a missing directory succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}

func TestBoltSemantics(t *testing.T) {
	ctx := context.Background()
	type op struct {
		do, key, value string // do: put, get, delete
		want           string // get: the value
		err            error  // nil, or the error it must wrap
	}
	tests := []struct {
		name string
		ops  []op
		list map[string][]Entry // prefix → the entries List must give after ops
	}{
		{
			name: "put then get",
			ops: []op{
				{do: "put", key: "inbox/a", value: "hello"},
				{do: "get", key: "inbox/a", want: "hello"},
			},
			list: map[string][]Entry{"inbox/": {{"inbox/a", 5}}},
		},
		{
			name: "overwrite",
			ops: []op{
				{do: "put", key: "k", value: "one"},
				{do: "put", key: "k", value: "three"},
				{do: "get", key: "k", want: "three"},
			},
			list: map[string][]Entry{"": {{"k", 5}}},
		},
		{
			name: "empty value is a value",
			ops: []op{
				{do: "put", key: "k", value: ""},
				{do: "get", key: "k", want: ""},
			},
			list: map[string][]Entry{"k": {{"k", 0}}},
		},
		{
			name: "get missing",
			ops:  []op{{do: "get", key: "inbox/nope", err: ErrNotFound}},
			list: map[string][]Entry{"": nil},
		},
		{
			name: "delete",
			ops: []op{
				{do: "put", key: "k", value: "v"},
				{do: "delete", key: "k"},
				{do: "get", key: "k", err: ErrNotFound},
				{do: "delete", key: "k", err: ErrNotFound},
			},
			list: map[string][]Entry{"": nil},
		},
		{
			name: "delete missing",
			ops:  []op{{do: "delete", key: "never", err: ErrNotFound}},
		},
		{
			name: "list by prefix in byte order",
			ops: []op{
				{do: "put", key: "inbox/b", value: "22"},
				{do: "put", key: "inbox/a", value: "1"},
				{do: "put", key: "inbox/ä", value: "333"},
				{do: "put", key: "inbox/B", value: ""},
				{do: "put", key: "inboxx/a", value: "x"},
				{do: "put", key: "shared/motd", value: "hi"},
				{do: "put", key: "chat/a", value: "c"},
			},
			list: map[string][]Entry{
				"inbox/":  {{"inbox/B", 0}, {"inbox/a", 1}, {"inbox/b", 2}, {"inbox/ä", 3}},
				"inbox":   {{"inbox/B", 0}, {"inbox/a", 1}, {"inbox/b", 2}, {"inbox/ä", 3}, {"inboxx/a", 1}},
				"shared/": {{"shared/motd", 2}},
				"zzz":     nil,
				"":        {{"chat/a", 1}, {"inbox/B", 0}, {"inbox/a", 1}, {"inbox/b", 2}, {"inbox/ä", 3}, {"inboxx/a", 1}, {"shared/motd", 2}},
			},
		},
		{
			name: "longest key",
			ops: []op{
				{do: "put", key: strings.Repeat("k", MaxFullKey), value: "v"},
				{do: "get", key: strings.Repeat("k", MaxFullKey), want: "v"},
			},
		},
		{
			name: "largest value",
			ops: []op{
				{do: "put", key: "big", value: strings.Repeat("v", MaxValue)},
				{do: "get", key: "big", want: strings.Repeat("v", MaxValue)},
			},
			list: map[string][]Entry{"big": {{"big", MaxValue}}},
		},
		{
			name: "value too large",
			ops: []op{
				{do: "put", key: "big", value: strings.Repeat("v", MaxValue+1), err: ErrTooLarge},
				{do: "get", key: "big", err: ErrNotFound},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			for i, o := range tt.ops {
				var err error
				switch o.do {
				case "put":
					err = s.Put(ctx, o.key, []byte(o.value))
				case "delete":
					err = s.Delete(ctx, o.key)
				case "get":
					var got []byte
					got, err = s.Get(ctx, o.key)
					if err == nil && (got == nil || string(got) != o.want) {
						t.Fatalf("op %d: Get(%.20q) = %.20q (nil %v), want %.20q", i, o.key, got, got == nil, o.want)
					}
				}
				if o.err == nil && err != nil || o.err != nil && !errors.Is(err, o.err) {
					t.Fatalf("op %d: %s(%.20q): %v, want %v", i, o.do, o.key, err, o.err)
				}
			}
			for prefix, want := range tt.list {
				got, err := s.List(ctx, prefix)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("List(%q) = %v, %v; want %v", prefix, got, err, want)
				}
			}
		})
	}
}

func TestBoltGetCopies(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	in := []byte("value")
	if err := s.Put(ctx, "k", in); err != nil {
		t.Fatal(err)
	}
	in[0] = 'X' // the store must not hold the caller's slice
	got, err := s.Get(ctx, "k")
	if err != nil || string(got) != "value" {
		t.Fatalf("Get = %q, %v; want value", got, err)
	}
	got[0] = 'Y' // nor hand out its own memory
	again, _ := s.Get(ctx, "k")
	if string(again) != "value" {
		t.Fatalf("Get after changing a result = %q", again)
	}
}

func TestBoltBadKeys(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	for name, key := range map[string]string{
		"empty":     "",
		"too long":  strings.Repeat("k", MaxFullKey+1),
		"not utf-8": "inbox/a\xffb",
		"nul":       "inbox/a\x00b",
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Put(ctx, key, []byte("v")); !errors.Is(err, ErrBadKey) {
				t.Errorf("Put: %v, want ErrBadKey", err)
			}
			if _, err := s.Get(ctx, key); !errors.Is(err, ErrBadKey) {
				t.Errorf("Get: %v, want ErrBadKey", err)
			}
			if err := s.Delete(ctx, key); !errors.Is(err, ErrBadKey) {
				t.Errorf("Delete: %v, want ErrBadKey", err)
			}
		})
	}
	if got, err := s.List(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("List after bad keys = %v, %v; want nothing", got, err)
	}
}

// calls are the Store's methods, each run once with the key "k".
var calls = map[string]func(context.Context, Store) error{
	"Get":    func(ctx context.Context, s Store) error { _, err := s.Get(ctx, "k"); return err },
	"Put":    func(ctx context.Context, s Store) error { return s.Put(ctx, "k", []byte("new")) },
	"Delete": func(ctx context.Context, s Store) error { return s.Delete(ctx, "k") },
	"List":   func(ctx context.Context, s Store) error { _, err := s.List(ctx, ""); return err },
}

func TestBoltCancelled(t *testing.T) {
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			s, _ := openTemp(t)
			if err := s.Put(context.Background(), "k", []byte("old")); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := call(ctx, s); !errors.Is(err, context.Canceled) {
				t.Fatalf("%s with a cancelled ctx: %v, want context.Canceled", name, err)
			}
			got, err := s.Get(context.Background(), "k")
			if err != nil || string(got) != "old" {
				t.Fatalf("after a cancelled %s, k = %q, %v; want old", name, got, err)
			}
		})
	}
}

func TestBoltClosed(t *testing.T) {
	s, path := openTemp(t)
	if err := s.Put(context.Background(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for name, call := range calls {
		if err := call(context.Background(), s); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	// Closing let go of the file.
	s2, err := Open(path, &Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	s2.Close()
}

func TestBoltCloseWaitsForWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	// A long batch delay keeps the writes in flight while Close is called.
	s, err := Open(path, &Options{BatchDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	errs := make(chan error, n)
	var started sync.WaitGroup
	for i := range n {
		started.Add(1)
		go func() {
			started.Done()
			errs <- s.Put(ctx, fmt.Sprintf("k%02d", i), []byte("v"))
		}()
	}
	started.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Each write either finished before Close or was refused by it.
	var ok []string
	for i := range n {
		switch err := <-errs; {
		case err == nil:
			ok = append(ok, fmt.Sprint(i))
		case !errors.Is(err, ErrClosed):
			t.Errorf("Put racing Close: %v", err)
		}
	}
	s2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.List(ctx, "")
	if err != nil || len(got) != len(ok) {
		t.Errorf("after reopening, %d keys (%v); %d Puts returned nil", len(got), err, len(ok))
	}
}

func TestBoltReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	for _, k := range []string{"a", "b", "c"} {
		if err := s.Put(ctx, k, []byte("value of "+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.List(ctx, "")
	if want := []Entry{{"a", 10}, {"c", 10}}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("List after reopen = %v, %v; want %v", got, err, want)
	}
	if v, err := s.Get(ctx, "c"); err != nil || string(v) != "value of c" {
		t.Fatalf("Get(c) after reopen = %q, %v", v, err)
	}
}

func TestBoltSecondOpenFails(t *testing.T) {
	_, path := openTemp(t)
	// flock locks belong to the open file, so a second Open in this
	// process is refused as another process's would be.
	s, err := Open(path, &Options{LockTimeout: 100 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("second Open of a store in use succeeded")
	}
	if !errors.Is(err, bolt.ErrTimeout) || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v; want an in-use error naming %s", err, path)
	}
}

func TestBoltConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	const writers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				k := fmt.Sprintf("w%02d/%02d", w, i)
				if err := s.Put(ctx, k, []byte(k)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.List(ctx, "")
	if err != nil || len(got) != writers*each {
		t.Fatalf("List: %d keys, %v; want %d", len(got), err, writers*each)
	}
	for w := range writers {
		for i := range each {
			k := fmt.Sprintf("w%02d/%02d", w, i)
			if v, err := s.Get(ctx, k); err != nil || string(v) != k {
				t.Errorf("Get(%s) = %q, %v", k, v, err)
			}
		}
	}
}

// TestBoltConcurrentMixed runs failing and cancelled writes in the same
// batches as good ones: Batch re-runs the others without them.
func TestBoltConcurrentMixed(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := range 10 {
				k := fmt.Sprintf("w%02d/%02d", w, i)
				if err := s.Put(ctx, k, []byte(k)); err != nil {
					t.Error(err)
				}
				if err := s.Delete(ctx, k+"/missing"); !errors.Is(err, ErrNotFound) {
					t.Errorf("Delete of a missing key: %v", err)
				}
				if err := s.Put(cancelled, k+"/cancelled", nil); !errors.Is(err, context.Canceled) {
					t.Errorf("cancelled Put: %v", err)
				}
				if i%2 == 1 {
					if err := s.Delete(ctx, k); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	got, err := s.List(ctx, "")
	if err != nil || len(got) != 20*5 {
		t.Fatalf("List: %d keys, %v; want %d", len(got), err, 20*5)
	}
}

// crashEnv names the store a crash child writes to.
const crashEnv = "SWITCHYARD_STATE_CRASH_CHILD"

// TestBoltKillDurability is the store's contract: a Put that returned nil
// survives kill -9 of the process that made it. The test binary runs
// itself as a child that writes keys from several goroutines and prints
// each key once its Put has returned nil; the parent kills it after a few
// hundred and checks that every printed key is in the file.
func TestBoltKillDurability(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltKillDurability$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	const want = 400
	var acked []string
	sc := bufio.NewScanner(out)
	for len(acked) < want && sc.Scan() {
		if k, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			acked = append(acked, k)
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	// Keys acknowledged between the last read and the kill count too.
	for sc.Scan() {
		if k, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			acked = append(acked, k)
		}
	}
	werr := cmd.Wait()
	killed = true
	if len(acked) < want {
		t.Fatalf("child acknowledged %d keys, then %v; stderr:\n%s", len(acked), werr, stderr.Bytes())
	}

	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, k := range acked {
		v, err := s.Get(ctx, k)
		if err != nil || !bytes.Equal(v, crashValue(k)) {
			t.Errorf("acknowledged %s: got %d bytes, %v", k, len(v), err)
		}
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			first = cmp.Or(first, err)
		}
		return first
	})
	if err != nil {
		t.Errorf("file inconsistent after kill: %v", err)
	}
	all, _ := s.List(ctx, "")
	t.Logf("%d keys acknowledged, %d in the file after kill -9", len(acked), len(all))
}

func crashValue(key string) []byte {
	return bytes.Repeat([]byte(key+";"), 8)
}

// crashChild writes keys to the store at path until it is killed (or has
// written far more than the parent waits for), printing each key after
// its Put returned nil.
func crashChild(path string) {
	s, err := Open(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex // one line per write to stdout
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100_000 {
				k := fmt.Sprintf("crash/%d/%06d", w, i)
				if err := s.Put(context.Background(), k, crashValue(k)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "acked %s\n", k)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// BenchmarkPutParallel is 32 writers per CPU sharing commits: its ns/op
// is far below BenchmarkPutSerial's when group commit works.
func BenchmarkPutParallel(b *testing.B) {
	s, _ := openTemp(b)
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 200)
	var mu sync.Mutex
	next := 0
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		g := next
		next++
		mu.Unlock()
		for i := 0; pb.Next(); i++ {
			if err := s.Put(ctx, fmt.Sprintf("bench/%03d/%09d", g, i), value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutSerial is one writer: every Put waits out the batch delay
// alone and pays its own fsync. Compare BenchmarkPutParallel.
func BenchmarkPutSerial(b *testing.B) {
	s, _ := openTemp(b)
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 200)
	for i := 0; b.Loop(); i++ {
		if err := s.Put(ctx, fmt.Sprintf("bench/%09d", i), value); err != nil {
			b.Fatal(err)
		}
	}
}
