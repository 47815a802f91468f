package testutil

import (
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLogRecorder(t *testing.T) {
	var rec LogRecorder
	log := slog.New(&rec)
	log.Debug("plain", "k", 1)
	sub := log.With("plugin", "p").WithGroup("ignored").With("gen", 2)
	sub.Warn("from sub", "k", "v")
	log.Info("plain again")

	if got := len(rec.Find("")); got != 3 {
		t.Fatalf("Find(\"\") = %d records, want 3", got)
	}
	if got := rec.Find("plain"); len(got) != 2 || got[0].Level != slog.LevelDebug || got[0].Attrs["k"] != "1" {
		t.Errorf("Find(plain) = %+v", got)
	}
	want := map[string]string{"plugin": "p", "gen": "2", "k": "v"}
	got := rec.Find("sub")
	if len(got) != 1 || got[0].Level != slog.LevelWarn || !maps.Equal(got[0].Attrs, want) {
		t.Errorf("Find(sub) = %+v, want attrs %v", got, want)
	}
	if h := sub.Handler().(*LogRecorder); len(h.Find("")) != 3 {
		t.Error("a derived handler does not see the shared records")
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("x", 800) {
		t.Errorf("%d bytes, want 800", len(got))
	}
}

func TestShortDir(t *testing.T) {
	var dir string
	t.Run("make", func(t *testing.T) {
		dir = ShortDir(t)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Fatalf("Stat: %v", err)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s outlived its test: %v", dir, err)
	}
}

// TestGoroutinesSettle: a goroutine that exits shortly after the test is
// waited for, not reported.
func TestGoroutinesSettle(t *testing.T) {
	CheckGoroutines(t)
	go time.Sleep(100 * time.Millisecond)
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 5*time.Second, "the third call", func() bool { n++; return n == 3 })
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if Alive(-1) {
		t.Error("pid -1 is alive")
	}
}
