package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/switchyard-dev/switchyard/kernel/config"
)

// credential is the user and group a kernel started as root becomes once
// it has bound its sockets ([privileges] in the configuration), as the Pike
// kernel did after binding port 53. Its plugins run as that user too: they
// are started after the drop.
type credential struct {
	user, group string
	uid, gid    int
}

// lookupCredential resolves p, or returns nil when the kernel stays who it
// is: no user configured, or already running as that user.
func lookupCredential(p config.Privileges) (*credential, error) {
	if p.User == "" {
		return nil, nil
	}
	u, err := user.Lookup(p.User)
	if err != nil {
		if u, err = user.LookupId(p.User); err != nil {
			return nil, fmt.Errorf("privileges.user %q: %w", p.User, err)
		}
	}
	c := &credential{user: u.Username}
	if c.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("privileges.user %q: uid %q: %w", p.User, u.Uid, err)
	}
	gid := u.Gid
	c.group = gid
	if p.Group != "" {
		g, err := user.LookupGroup(p.Group)
		if err != nil {
			if g, err = user.LookupGroupId(p.Group); err != nil {
				return nil, fmt.Errorf("privileges.group %q: %w", p.Group, err)
			}
		}
		gid, c.group = g.Gid, g.Name
	}
	if c.gid, err = strconv.Atoi(gid); err != nil {
		return nil, fmt.Errorf("privileges.group: gid %q: %w", gid, err)
	}
	switch euid := os.Geteuid(); {
	case euid == c.uid && os.Getegid() == c.gid:
		return nil, nil
	case euid != 0:
		return nil, fmt.Errorf("privileges.user %q: the kernel runs as uid %d; only root can become another user", p.User, euid)
	case c.uid == 0:
		return nil, nil // root asked to stay root
	}
	return c, nil
}

// owner is the uid that must own the kernel's directories: the user it
// drops to, or the one it runs as.
func (c *credential) owner() int {
	if c == nil {
		return os.Geteuid()
	}
	return c.uid
}

// handOver gives the kernel's files to the user it is about to become, so
// that it can go on writing snapshots and the store and remove its sockets.
func (c *credential) handOver(trees []string, files []string) error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, root := range trees {
		err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, c.uid, c.gid)
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, f := range files {
		if err := os.Lchown(f, c.uid, c.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// drop makes the whole process (every thread) the credential's user and
// group, with no supplementary groups. There is no way back.
func (c *credential) drop() error {
	if c == nil {
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(c.gid); err != nil {
		return fmt.Errorf("setgid %d: %w", c.gid, err)
	}
	if err := syscall.Setuid(c.uid); err != nil {
		return fmt.Errorf("setuid %d: %w", c.uid, err)
	}
	return nil
}
