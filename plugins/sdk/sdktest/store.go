package sdktest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/plugins/proto"
)

// Store is an in-memory shared store for one plugin, with the kernel's key
// rules (non-empty UTF-8 keys of at most 1 KiB without NUL, values of at most
// 16 MiB). It is safe for concurrent use.
type Store struct {
	mu sync.Mutex
	m  map[string][]byte // guarded by mu
}

var _ host.Store = (*Store)(nil)

// NewStore returns an empty Store.
func NewStore() *Store { return &Store{m: make(map[string][]byte)} }

const (
	maxKey   = 1024
	maxValue = 16 << 20
)

func checkKey(key string) error {
	if key == "" || len(key) > maxKey || !utf8.ValidString(key) || strings.IndexByte(key, 0) >= 0 || key == "shared/" {
		return fmt.Errorf("%w: %q", host.ErrBadKey, key)
	}
	return nil
}

func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, fmt.Errorf("%w: %q", host.ErrNoKey, key)
	}
	return slices.Clone(v), ctx.Err()
}

func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > maxValue {
		return fmt.Errorf("%w: value of %d bytes", host.ErrBadKey, len(value))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = slices.Clone(value)
	return nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok {
		return fmt.Errorf("%w: %q", host.ErrNoKey, key)
	}
	delete(s.m, key)
	return nil
}

func (s *Store) List(ctx context.Context, prefix string) ([]*proto.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var es []*proto.Entry
	for k, v := range s.m {
		if strings.HasPrefix(k, prefix) {
			es = append(es, &proto.Entry{Key: k, Size: int64(len(v))})
		}
	}
	slices.SortFunc(es, func(a, b *proto.Entry) int { return strings.Compare(a.Key, b.Key) })
	return es, ctx.Err()
}
