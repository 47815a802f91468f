package scaffold

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// modFile is what a plugin's go.mod needs from switchyard's: the go and
// toolchain lines, the requirements and the replacements.
type modFile struct {
	module, goVersion, toolchain string
	require                      [][2]string // path, version
	replace                      []string    // "old [v] => new [v]"
}

// parseMod reads a go.mod as the go command writes it. It knows the
// directives a plugin's go.mod copies and skips the others (exclude,
// retract, godebug, tool, ignore).
func parseMod(b []byte) modFile {
	var m modFile
	block := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if block != "" {
			if f[0] == ")" {
				block = ""
				continue
			}
			f = append([]string{block}, f...)
		} else if len(f) == 2 && f[1] == "(" {
			block = f[0]
			continue
		}
		switch {
		case f[0] == "module" && len(f) == 2:
			m.module = unquote(f[1])
		case f[0] == "go" && len(f) == 2:
			m.goVersion = f[1]
		case f[0] == "toolchain" && len(f) == 2:
			m.toolchain = f[1]
		case f[0] == "require" && len(f) == 3:
			m.require = append(m.require, [2]string{unquote(f[1]), unquote(f[2])})
		case f[0] == "replace" && slices.Contains(f, "=>"):
			m.replace = append(m.replace, strings.Join(f[1:], " "))
		}
	}
	return m
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// modulePath returns the module path a go.mod declares.
func modulePath(gomod []byte) string { return parseMod(gomod).module }

// checkModulePath refuses what cannot be a module path. The go command has
// the last word; this catches the mistakes a flag invites.
func checkModulePath(p string) error {
	bad := p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") ||
		strings.HasPrefix(p, "-") || strings.HasPrefix(p, ".")
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~/", r)) {
			bad = true
		}
	}
	for _, elem := range strings.Split(p, "/") {
		if elem == "." || elem == ".." {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("scaffold: bad module path %q: use letters, digits and -._~ in elements separated by '/', like example.com/you/%s", p, filepath.Base(p))
	}
	return nil
}

// moduleFiles makes the plugin's go.mod and go.sum from the checkout's: the
// plugin requires switchyard, replaced by the checkout, and every module
// switchyard requires, at switchyard's versions, so that the go command has
// every requirement and checksum it needs without a network.
func moduleFiles(d data) (gomod, gosum []byte, err error) {
	src, err := os.ReadFile(filepath.Join(d.Root, "go.mod"))
	if err != nil {
		return nil, nil, fmt.Errorf("scaffold: %w", err)
	}
	gosum, err = os.ReadFile(filepath.Join(d.Root, "go.sum"))
	if err != nil {
		return nil, nil, fmt.Errorf("scaffold: the checkout's go.sum: %w", err)
	}
	m := parseMod(src)
	direct := map[string]bool{Module: true}
	if d.DNS {
		direct["github.com/miekg/dns"] = true
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "module %s\n\ngo %s\n", d.Module, m.goVersion)
	if m.toolchain != "" {
		fmt.Fprintf(&b, "\ntoolchain %s\n", m.toolchain)
	}
	fmt.Fprintf(&b, "\nrequire (\n\t%s v0.0.0\n", Module)
	var indirect []string
	for _, r := range m.require {
		if direct[r[0]] {
			fmt.Fprintf(&b, "\t%s %s\n", r[0], r[1])
		} else {
			indirect = append(indirect, fmt.Sprintf("\t%s %s // indirect\n", r[0], r[1]))
		}
	}
	b.WriteString(")\n")
	if len(indirect) > 0 {
		fmt.Fprintf(&b, "\nrequire (\n%s)\n", strings.Join(indirect, ""))
	}
	fmt.Fprintf(&b, "\n// switchyard is not published: build against a source checkout.\nreplace %s => %s\n", Module, d.Root)
	for _, r := range m.replace {
		// A replacement by a local folder is relative to the checkout.
		old, repl, _ := strings.Cut(r, " => ")
		if strings.HasPrefix(repl, "./") || strings.HasPrefix(repl, "../") {
			repl = filepath.Join(d.Root, repl)
		}
		fmt.Fprintf(&b, "replace %s => %s\n", old, repl)
	}
	return b.Bytes(), gosum, nil
}
