package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSnapshot(t *testing.T) {
	bin := probeBin(t, "v1")
	full, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	snaps := filepath.Join(dir, "snaps")
	if err := os.Mkdir(snaps, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := map[string]string{
		"truncated":      write("truncated", full[:len(full)*3/4], 0o755),
		"not executable": write("noexec", full, 0o644),
		"script":         write("script", []byte("#!/bin/sh\n"), 0o755),
		"empty":          write("empty", nil, 0o755),
		"directory":      dir,
	}
	for name, p := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := snapshot(p, snaps); !errors.Is(err, ErrNotExecutable) {
				t.Errorf("snapshot(%s) = %v, want ErrNotExecutable", name, err)
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
