package admin

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReferenceCommands: docs/admin.md has one section, headed by the
// command's usage in backquotes ("## `conns [LISTENER]`"), for every command
// of the command table, and no section for a command the table lacks.
func TestReferenceCommands(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "admin.md")
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the admin reference: %v", err)
	}
	defer f.Close()
	var documented []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		heading, ok := strings.CutPrefix(sc.Text(), "## `")
		if !ok {
			continue
		}
		usage, ok := strings.CutSuffix(heading, "`")
		if !ok {
			t.Errorf("%s:%d: a command heading is the usage in backquotes alone: %q", path, n, sc.Text())
			continue
		}
		if slices.Contains(documented, usage) {
			t.Errorf("%s:%d: %s is documented twice", path, n, usage)
		}
		documented = append(documented, usage)
		name, _, _ := strings.Cut(usage, " [")
		name = strings.TrimRight(strings.Map(func(r rune) rune {
			if r >= 'A' && r <= 'Z' {
				return -1 // argument names are in capitals
			}
			return r
		}, name), " ")
		s, ok := lookup(name)
		switch {
		case !ok:
			t.Errorf("%s:%d: documents %q, which is not a command", path, n, usage)
		case s.usage() != usage:
			t.Errorf("%s:%d: documents %q, but the command's usage is %q", path, n, usage, s.usage())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range commands {
		if !slices.Contains(documented, s.usage()) {
			t.Errorf("%s does not document %q", path, s.usage())
		}
	}
}
