package sdk_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// goBlock is one ```go block of a document.
type goBlock struct {
	doc  string
	line int
	from string // the file a "<!-- from FILE -->" line before the block names
	text string
}

func (b goBlock) String() string { return fmt.Sprintf("%s:%d", b.doc, b.line) }

// goBlocks returns the ```go blocks of the documents, paths relative to
// root.
func goBlocks(t *testing.T, root string, docs ...string) []goBlock {
	t.Helper()
	var blocks []goBlock
	for _, doc := range docs {
		data, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		var cur *goBlock
		from := ""
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			switch {
			case cur != nil && line == "```":
				blocks = append(blocks, *cur)
				cur = nil
			case cur != nil:
				cur.text += line + "\n"
			case line == "```go":
				cur = &goBlock{doc: doc, line: n, from: from}
			}
			from = ""
			if f, ok := strings.CutPrefix(line, "<!-- from "); ok {
				from = strings.TrimSuffix(f, " -->")
			}
		}
		if cur != nil {
			t.Errorf("%s: unterminated ```go block", cur)
		}
	}
	return blocks
}

// TestDocsCode: the Go code in the README and docs/plugins.md is real. A
// block after a "<!-- from FILE -->" line must appear in FILE as it is; any
// other block must be a whole program (package main) that passes go vet against
// this module.
func TestDocsCode(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlocks(t, root, "README.md", filepath.Join("docs", "plugins.md"))
	quotes, programs := 0, 0
	for _, b := range blocks {
		if b.from != "" {
			src, err := os.ReadFile(filepath.Join(root, b.from))
			if err != nil {
				t.Errorf("%s quotes %s: %v", b, b.from, err)
			} else if !strings.Contains(string(src), b.text) {
				t.Errorf("%s quotes %s, which no longer holds:\n%s", b, b.from, b.text)
			}
			quotes++
			continue
		}
		if !strings.HasPrefix(b.text, "package main\n") {
			t.Errorf("%s: a Go block is either a quote (<!-- from FILE --> before it) or a whole program", b)
			continue
		}
		programs++
		t.Run(fmt.Sprintf("%s:%d", filepath.Base(b.doc), b.line), func(t *testing.T) { vetProgram(t, root, b.text) })
	}
	if quotes < 10 || programs < 2 {
		t.Errorf("found %d quotes and %d programs; the documents should have more", quotes, programs)
	}
}

// vetProgram writes src as the main package of a module that requires
// this one from root, with the dependencies already in the module cache,
// and vets it.
func vetProgram(t *testing.T, root, src string) {
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("go is required in CI")
		}
		t.Skip("go not installed")
	}
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mod := "module doccheck\n\ngo 1.26.0\n\nrequire github.com/switchyard-dev/switchyard v0.0.0\n\nreplace github.com/switchyard-dev/switchyard => " + root + "\n"
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": []byte(src)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "vet", ".") // type-checks and vets
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the program does not pass go vet: %v\n%s\n%s", err, out, src)
	}
}
