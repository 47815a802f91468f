package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapshotDirs returns a temporary directory and an empty snapshot
// directory inside it.
func snapshotDirs(t *testing.T) (dir, snaps string) {
	dir = t.TempDir()
	snaps = filepath.Join(dir, "snaps")
	if err := os.Mkdir(snaps, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir, snaps
}

// probeBytes returns the content of probe v1's executable.
func probeBytes(t *testing.T) []byte {
	b, err := os.ReadFile(probeBin(t, "v1"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshot(t *testing.T) {
	full := probeBytes(t)
	dir, snaps := snapshotDirs(t)
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := map[string]string{
		"truncated":                         write("truncated", full[:len(full)*3/4], 0o755),
		"not executable":                    write("noexec", full, 0o644),
		"empty":                             write("empty", nil, 0o755),
		"directory":                         dir,
		"script not executable":             write("noexec.sh", []byte("#!/bin/sh\n"), 0o644),
		"script unfinished #!":              write("cut.sh", []byte("#!/bin/s"), 0o755),
		"script #! too long":                write("long.sh", []byte("#!/bin/sh "+strings.Repeat("x", maxShebang)+"\n"), 0o755),
		"script no interpreter":             write("bare.sh", []byte("#!\necho hi\n"), 0o755),
		"script relative":                   write("rel.sh", []byte("#!sh\n"), 0o755),
		"script interpreter is a directory": write("dir.sh", []byte("#!/tmp\n"), 0o755),
	}
	for name, p := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := snapshot(p, snaps)
			if !errors.Is(err, ErrNotExecutable) {
				t.Errorf("snapshot(%s) = %v, want ErrNotExecutable", name, err)
			}
			if errors.Is(err, errChanging) {
				t.Errorf("snapshot(%s) = %v: a file nobody writes is not changing", name, err)
			}
		})
	}
	good := write("good", full, 0o755)
	b, err := snapshot(good, snaps)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(b.path)
	if err != nil || fi.Mode().Perm() != 0o555 || fi.Size() != int64(len(full)) {
		t.Fatalf("snapshot file: %v %v", fi, err)
	}
	// The same content again reuses the snapshot.
	b2, err := snapshot(good, snaps)
	if err != nil || b2.path != b.path {
		t.Fatalf("second snapshot: %v %v", b2, err)
	}
	// Garbage collection keeps what it is told and removes the rest.
	if err := os.WriteFile(filepath.Join(snaps, ".incoming-123"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := gcSnapshots(snaps, map[string]bool{b.hash: true}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(snaps)
	if len(ents) != 1 || ents[0].Name() != b.hash {
		t.Errorf("after gc: %v", ents)
	}
	if err := gcSnapshots(snaps, nil); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(snaps); len(ents) != 0 {
		t.Errorf("after gc of everything: %v", ents)
	}
}

// TestSnapshotChanging: a file rewritten while the kernel reads it is
// reported as still changing (the watcher then waits for the writer), both
// when the rewrite makes it look truncated and when it lands mid-copy; the
// snapshot never holds a mix.
func TestSnapshotChanging(t *testing.T) {
	full := probeBytes(t)
	dir, snaps := snapshotDirs(t)
	p := filepath.Join(dir, "probe")
	for name, rewrite := range map[string]func(){
		// cp over it: truncated, then half written when the check runs.
		"truncated by a writer": func() {
			if err := os.WriteFile(p, full[:len(full)/2], 0o755); err != nil {
				t.Error(err)
			}
		},
		// A writer still appending: valid when checked, longer once read.
		"appended by a writer": func() {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if _, err := f.Write([]byte("more")); err != nil {
				t.Error(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(p, full, 0o755); err != nil {
				t.Fatal(err)
			}
			hook := func(string) { rewrite() }
			testHookSnapshotOpened.Store(&hook)
			defer testHookSnapshotOpened.Store(nil)
			b, err := snapshot(p, snaps)
			if !errors.Is(err, errChanging) || !errors.Is(err, ErrNotExecutable) {
				t.Fatalf("snapshot = %+v, %v; want errChanging", b, err)
			}
			if ents, _ := os.ReadDir(snaps); len(ents) != 0 {
				t.Errorf("a snapshot of a changing file was kept: %v", ents)
			}
		})
	}
}

// TestSnapshotScript: an executable script whose #! interpreter exists is a
// plugin like an ELF binary; one whose interpreter is missing is refused
// with an error that names the interpreter.
func TestSnapshotScript(t *testing.T) {
	dir, snaps := snapshotDirs(t)
	for name, text := range map[string]string{
		"sh":       "#!/bin/sh\nexec true\n",
		"with arg": "#! /bin/sh -e\nexec true\n",
		"env":      "#!/usr/bin/env python3\nprint()\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := snapshot(p, snaps)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(b.path)
			if err != nil || string(got) != text {
				t.Fatalf("snapshot holds %q, %v; want %q", got, err, text)
			}
		})
	}
	t.Run("missing interpreter", func(t *testing.T) {
		missing := filepath.Join(dir, "no-such-python")
		p := filepath.Join(dir, "missing")
		if err := os.WriteFile(p, []byte("#!"+missing+"\nprint()\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := snapshot(p, snaps)
		if !errors.Is(err, ErrNotExecutable) {
			t.Fatalf("snapshot = %v, want ErrNotExecutable", err)
		}
		if !strings.Contains(err.Error(), "interpreter") || !strings.Contains(err.Error(), missing) {
			t.Errorf("error %q does not say that the interpreter %s is missing", err, missing)
		}
	})
}
