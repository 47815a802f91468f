package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// MaxFullKey is the longest full key a Store accepts, in bytes: MaxKey
// plus room for a slot prefix.
const MaxFullKey = 2 * MaxKey

// MaxValue is the largest value a Store accepts, in bytes.
const MaxValue = 16 << 20

// More errors of the store.
var (
	ErrTooLarge = errors.New("state: value too large")
	ErrClosed   = errors.New("state: store closed")
)

// DefaultLockTimeout is how long Open waits for another process to let go
// of the store's file.
const DefaultLockTimeout = time.Second

// DefaultBatchDelay is how long a write waits for others to share its
// commit. Measured here (2 cores, ext4), a commit with its fsync takes
// about 1 ms: with a 1 ms delay one writer does a Put in ~1.6 ms and 64
// writers share commits at ~47 µs a Put, where bbolt's 10 ms default costs
// one writer ~11 ms a Put and 64 writers ~190 µs.
const DefaultBatchDelay = time.Millisecond

// bucket holds every key of a Bolt store.
var bucket = []byte("kv")

// Options tune Open. The zero value (or nil) gives the defaults.
type Options struct {
	// LockTimeout bounds the wait for the file lock another process
	// holds; zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// BatchDelay is how long a write waits for others to share its
	// commit and fsync; zero means DefaultBatchDelay. A full batch
	// (1000 writes) commits at once.
	BatchDelay time.Duration
}

// Bolt is the Store of one kernel: a single bbolt file. A Put or Delete
// that returns nil has been committed and fsynced; concurrent writes
// share one commit (bbolt's Batch). A Bolt is safe for concurrent use.
type Bolt struct {
	// mu is held shared by every call for its whole length and
	// exclusively by Close, so Close waits for calls in flight.
	mu     sync.RWMutex
	db     *bolt.DB // guarded by mu; nil once closed
	path   string
	closed bool // guarded by mu
}

var _ Store = (*Bolt)(nil)

// Open opens the store in the file at path, creating it (mode 0600) if
// need be; its directory must exist. bbolt locks the file: while another
// process has it open, Open fails after opts.LockTimeout rather than wait.
func Open(path string, opts *Options) (*Bolt, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("state: open %s: in use by another process (waited %v): %w", path, o.LockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	if o.BatchDelay <= 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	db.MaxBatchDelay = o.BatchDelay
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	return &Bolt{db: db, path: path}, nil
}

// Get returns a copy of the value of key; the error wraps ErrNotFound if
// there is none.
func (s *Bolt) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	db, done, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var out []byte
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, key)
		}
		out = make([]byte, len(v))
		copy(out, v)
		return nil
	})
	return out, err
}

// Put sets key to value; Put does not keep value once it returns.
func (s *Bolt) Put(ctx context.Context, key string, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValue {
		return fmt.Errorf("%w: %d bytes for %q, more than %d", ErrTooLarge, len(value), key, MaxValue)
	}
	db, done, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer done()
	err = db.Batch(func(tx *bolt.Tx) error {
		// A cancelled call fails here and so stays out of the commit;
		// Batch then re-runs the other calls without it.
		if err := ctx.Err(); err != nil {
			return err
		}
		return tx.Bucket(bucket).Put([]byte(key), value)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("state: put %q: %w", key, err)
	}
	return err
}

// Delete removes key; the error wraps ErrNotFound if there was none.
func (s *Bolt) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	db, done, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer done()
	var found bool
	err = db.Batch(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Batch may run this more than once; the last run is the one
		// committed. A missing key is not an error here, since an error
		// would make Batch roll back and re-run everyone else's writes.
		b := tx.Bucket(bucket)
		found = b.Get([]byte(key)) != nil
		if !found {
			return nil
		}
		return b.Delete([]byte(key))
	})
	switch {
	case err != nil && ctx.Err() == nil:
		return fmt.Errorf("state: delete %q: %w", key, err)
	case err != nil:
		return err
	case !found:
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return nil
}

// List returns the keys that begin with prefix, in byte order, with the
// sizes of their values.
func (s *Bolt) List(ctx context.Context, prefix string) ([]Entry, error) {
	db, done, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var out []Entry
	err = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			out = append(out, Entry{Key: string(k), Size: len(v)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: list %q: %w", prefix, err)
	}
	return out, nil
}

// Close waits for calls in flight, then closes the file. Later calls
// fail with ErrClosed; Close itself may be called again.
func (s *Bolt) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	db := s.db
	s.db = nil
	if err := db.Close(); err != nil {
		return fmt.Errorf("state: close %s: %w", s.path, err)
	}
	return nil
}

// begin starts a call: it fails if ctx is done or the store closed, and
// otherwise holds off Close until done is called.
func (s *Bolt) begin(ctx context.Context) (*bolt.DB, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, nil, ErrClosed
	}
	return s.db, s.mu.RUnlock, nil
}

// checkKey validates a full key; errors wrap ErrBadKey.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrBadKey)
	case len(key) > MaxFullKey:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrBadKey, len(key), MaxFullKey)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not UTF-8", ErrBadKey)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: contains NUL", ErrBadKey)
	}
	return nil
}
