package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Store is the key/value store plugins share through the kernel. Keys are
// full keys (see Key). A Put or Delete that returns nil is durable: it
// survives a crash of the kernel. Implementations are safe for concurrent
// use; bbolt backs the kernel's, and the interface is small so that several
// kernels can share a distributed store (etcd, Redis) instead.
type Store interface {
	Get(ctx context.Context, key string) (value []byte, err error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	// List returns the keys with prefix, in order, and their sizes.
	List(ctx context.Context, prefix string) ([]Entry, error)
	Close() error
}

// Entry is one key of a List.
type Entry struct {
	Key  string `json:"key"`
	Size int    `json:"size"`
}

// Errors of the store and its key space.
var (
	ErrNotFound = errors.New("state: no such key")
	ErrBadKey   = errors.New("state: bad key")
)

// SharedPrefix starts the keys common to every plugin.
const SharedPrefix = "shared/"

// MaxKey is the longest key a plugin may use, in bytes, before Key adds
// its slot prefix.
const MaxKey = 1024

// Key turns the key a plugin of slot uses into the store's full key: the
// plugin's key K is stored as "SLOT/K", and keys beginning "shared/" are
// common to all plugins. A key must be valid UTF-8, non-empty, at most
// MaxKey bytes, and free of NUL bytes; errors wrap ErrBadKey.
func Key(slot, key string) (string, error) {
	switch {
	case key == "":
		return "", fmt.Errorf("%w: empty", ErrBadKey)
	case len(key) > MaxKey:
		return "", fmt.Errorf("%w: %d bytes, more than %d", ErrBadKey, len(key), MaxKey)
	case !utf8.ValidString(key):
		return "", fmt.Errorf("%w: not UTF-8", ErrBadKey)
	case strings.IndexByte(key, 0) >= 0:
		return "", fmt.Errorf("%w: contains NUL", ErrBadKey)
	case slot == "" || strings.ContainsRune(slot, '/'):
		return "", fmt.Errorf("%w: slot name %q", ErrBadKey, slot)
	}
	if strings.HasPrefix(key, SharedPrefix) {
		if key == SharedPrefix {
			return "", fmt.Errorf("%w: %q names no key", ErrBadKey, key)
		}
		return key, nil
	}
	return slot + "/" + key, nil
}

// PluginKey is the inverse of Key: the key as the plugin of slot knows it,
// and whether full belongs to that plugin (its own keys, or shared ones).
func PluginKey(slot, full string) (string, bool) {
	if strings.HasPrefix(full, SharedPrefix) {
		return full, true
	}
	k, ok := strings.CutPrefix(full, slot+"/")
	return k, ok && k != ""
}
