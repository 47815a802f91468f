package kernel

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNotExecutable is wrapped by errors about a plugin path that does not
// hold a complete executable for this machine.
var ErrNotExecutable = errors.New("kernel: not a complete executable")

// errChanging is wrapped, beside ErrNotExecutable, when the file changed
// while the kernel read it: a writer is still at it, and its next write
// brings the watcher back.
var errChanging = errors.New("changed while being read")

// fileID is what the watcher compares to tell whether a file changed:
// replacing it (rename), rewriting it in place and touching it all change it.
type fileID struct {
	size  int64
	mtime time.Time
	ino   uint64
	dev   uint64
}

func statID(path string) (fileID, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, nil, err
	}
	return idOf(fi), fi, nil
}

func idOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino, id.dev = st.Ino, st.Dev
	}
	return id
}

// checkExecutable says whether f, opened from path, is a complete
// executable for this machine: a regular file with an execute bit that is
// either a script whose "#!" interpreter exists (see checkScript) or an ELF
// file that debug/elf can parse (a file still being written usually cannot:
// Go puts the section headers at the end).
func checkExecutable(path string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: not a regular file", path, ErrNotExecutable)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s: %w: no execute permission", path, ErrNotExecutable)
	}
	var magic [2]byte
	if n, _ := f.ReadAt(magic[:], 0); n == 2 && string(magic[:]) == "#!" {
		return checkScript(path, f)
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("%s: %w: %v", path, ErrNotExecutable, err)
	}
	defer ef.Close()
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return fmt.Errorf("%s: %w: ELF type %v", path, ErrNotExecutable, ef.Type)
	}
	if want, ok := elfMachine[runtime.GOARCH]; ok && ef.Machine != want {
		return fmt.Errorf("%s: %w: built for %v, this machine is %s", path, ErrNotExecutable, ef.Machine, runtime.GOARCH)
	}
	// Every section must lie within the file: a truncated copy fails here.
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_NOBITS && s.Offset+s.FileSize > uint64(fi.Size()) {
			return fmt.Errorf("%s: %w: truncated (section %s ends past the file)", path, ErrNotExecutable, s.Name)
		}
	}
	return nil
}

// maxShebang is how much of a script's first line Linux reads to find its
// interpreter (BINPRM_BUF_SIZE).
const maxShebang = 256

// checkScript checks a file that starts with "#!": its first line must be
// complete and name an absolute path to an executable regular file, which
// the kernel then runs with the script. A script has no structure that shows
// it was cut short, so its completeness rests on the watcher's check that
// size, mtime and inode stayed put; a first line still being written is
// caught here.
func checkScript(path string, f *os.File) error {
	buf := make([]byte, maxShebang)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	line, _, ok := strings.Cut(string(buf[:n]), "\n")
	if !ok {
		return fmt.Errorf("%s: %w: script's #! line is unfinished or longer than %d bytes", path, ErrNotExecutable, maxShebang)
	}
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		return fmt.Errorf("%s: %w: script's #! line names no interpreter", path, ErrNotExecutable)
	}
	interp := fields[0]
	if !filepath.IsAbs(interp) {
		return fmt.Errorf("%s: %w: script's interpreter %q is not an absolute path", path, ErrNotExecutable, interp)
	}
	ifi, err := os.Stat(interp)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w: script's interpreter: %v", path, ErrNotExecutable, err)
	case !ifi.Mode().IsRegular() || ifi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s: %w: script's interpreter %s is not an executable file", path, ErrNotExecutable, interp)
	}
	return nil
}

var elfMachine = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"386":     elf.EM_386,
	"arm":     elf.EM_ARM,
	"riscv64": elf.EM_RISCV,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
}

// binary is a plugin executable copied into the snapshot directory.
type binary struct {
	source string // the configured path it was copied from
	hash   string // sha256, hex
	path   string // <snapshots>/<hash>, mode 0555
	id     fileID // of source, when it was read
}

// testHookSnapshotOpened, when set by a test, runs once snapshot has opened
// the file: a writer racing the read, made deterministic.
var testHookSnapshotOpened atomic.Pointer[func(path string)]

// snapshot validates the executable at path and copies it to a
// content-addressed file in dir, which the kernel then execs. Operators may
// overwrite the watched path in place while the snapshot runs, and the
// previous snapshot stays for rollback.
func snapshot(path, dir string) (*binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The identity of the file opened, not of whatever the path names by
	// now: a rename-over between open and stat must not pass the old
	// content off as the new file's.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	before := idOf(fi)
	if hook := testHookSnapshotOpened.Load(); hook != nil {
		(*hook)(path)
	}
	if err := checkExecutable(path, f); err != nil {
		// A copy in progress looks truncated: say so when the file is
		// still changing, so the watcher waits for it rather than
		// reporting a failure.
		if now, _, serr := statID(path); serr == nil && now != before {
			return nil, fmt.Errorf("%s: %w: %w", path, ErrNotExecutable, errChanging)
		}
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".incoming-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), f); err != nil {
		tmp.Close()
		return nil, err
	}
	after, _, err := statID(path)
	if err != nil {
		tmp.Close()
		return nil, err
	}
	if after != before {
		tmp.Close()
		return nil, fmt.Errorf("%s: %w: %w", path, ErrNotExecutable, errChanging)
	}
	if err := tmp.Chmod(0o555); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	b := &binary{source: path, hash: hex.EncodeToString(h.Sum(nil)), id: before}
	b.path = filepath.Join(dir, b.hash)
	if _, err := os.Stat(b.path); err == nil {
		return b, nil
	}
	if err := os.Rename(tmp.Name(), b.path); err != nil {
		return nil, err
	}
	return b, nil
}

// gcSnapshots removes the snapshots in dir whose hash keep does not hold,
// and leftovers of interrupted copies.
func gcSnapshots(dir string, keep map[string]bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if keep[name] {
			continue
		}
		if len(name) == sha256.Size*2 || strings.HasPrefix(name, ".incoming-") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
