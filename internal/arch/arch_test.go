package arch

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/switchyard-dev/switchyard"

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Dir        string
	Deps       []string
	Imports    []string
}

// packages lists the module's packages as `go list` sees them.
func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if len(ps) < 10 {
		t.Fatalf("go list found only %d packages", len(ps))
	}
	return ps
}

// TestPackageDocs: every package has a doc comment saying what it is for.
func TestPackageDocs(t *testing.T) {
	for _, p := range packages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
			continue
		}
		want := "Package " + p.Name + " "
		if p.Name == "main" {
			want = "Command "
		}
		if !strings.HasPrefix(p.Doc, want) {
			t.Errorf("%s: doc comment should start with %q: %q", p.ImportPath, want, firstLine(p.Doc))
		}
	}
}

// TestImportBoundaries: the SDK plugin authors import never reaches into
// the kernel; protocol front ends know a dispatch interface, not processes;
// bundled plugins use the SDK like any other plugin.
func TestImportBoundaries(t *testing.T) {
	rules := []struct {
		from   string   // import path prefix (relative to the module) the rule applies to
		forbid []string // module-relative prefixes it may not depend on, even indirectly
	}{
		{"plugins/sdk", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/proto", []string{"kernel", "listeners", "state", "plugins/host", "plugins/sdk"}},
		{"listeners", []string{"kernel", "plugins", "state"}},
		{"state", []string{"kernel", "listeners", "plugins"}},
		{"plugins/host", []string{"kernel", "listeners", "state"}},
		{"plugins/hello", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/probe", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/inbox", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/cgi", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/zone", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/smtp", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"plugins/chat", []string{"kernel", "listeners", "state", "plugins/host"}},
		{"internal/cgiout", []string{"kernel", "listeners", "state", "plugins"}},
		{"internal/accept", []string{"kernel", "listeners", "state", "plugins"}},
		{"internal/scaffold", []string{"kernel", "listeners", "state", "plugins"}},
		{"internal/callctx", []string{"kernel", "listeners", "state", "plugins"}},
		{"kernel/config", []string{"plugins", "listeners", "state", "kernel/admin"}},
		{"kernel/admin", []string{"plugins", "listeners", "state", "kernel/config"}},
	}
	// sdktest runs the kernel's side of the protocol in memory, by design.
	allowed := map[string]bool{"plugins/sdk/sdktest→plugins/host": true}
	for _, p := range packages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, r := range rules {
			if rel != r.from && !strings.HasPrefix(rel, r.from+"/") {
				continue
			}
			for _, d := range p.Deps {
				if !strings.HasPrefix(d, module+"/") {
					continue
				}
				drel := strings.TrimPrefix(d, module+"/")
				for _, f := range r.forbid {
					if (drel == f || strings.HasPrefix(drel, f+"/")) && !allowed[rel+"→"+f] {
						t.Errorf("%s depends on %s", rel, drel)
					}
				}
			}
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
