package kernel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/plugins/proto"
	"github.com/switchyard-dev/switchyard/state"
)

// slotStore is the shared store as the plugin of one slot sees it: its key
// K is the store's SLOT/K, and keys beginning "shared/" are common to all.
type slotStore struct {
	slot string
	st   state.Store
}

var _ host.Store = slotStore{}

func (s slotStore) key(key string) (string, error) {
	full, err := state.Key(s.slot, key)
	if err != nil {
		return "", fmt.Errorf("%w: %w", host.ErrBadKey, err)
	}
	return full, nil
}

func (s slotStore) Get(ctx context.Context, key string) ([]byte, error) {
	full, err := s.key(key)
	if err != nil {
		return nil, err
	}
	v, err := s.st.Get(ctx, full)
	return v, hostError(err)
}

func (s slotStore) Put(ctx context.Context, key string, value []byte) error {
	full, err := s.key(key)
	if err != nil {
		return err
	}
	return hostError(s.st.Put(ctx, full, value))
}

func (s slotStore) Delete(ctx context.Context, key string) error {
	full, err := s.key(key)
	if err != nil {
		return err
	}
	return hostError(s.st.Delete(ctx, full))
}

func (s slotStore) List(ctx context.Context, prefix string) ([]*proto.Entry, error) {
	if !utf8.ValidString(prefix) || len(prefix) > state.MaxKey {
		return nil, fmt.Errorf("%w: prefix %q", host.ErrBadKey, prefix)
	}
	full := s.slot + "/" + prefix
	if strings.HasPrefix(prefix, state.SharedPrefix) {
		full = prefix
	}
	es, err := s.st.List(ctx, full)
	if err != nil {
		return nil, hostError(err)
	}
	out := make([]*proto.Entry, 0, len(es))
	for _, e := range es {
		if k, ok := state.PluginKey(s.slot, e.Key); ok {
			out = append(out, &proto.Entry{Key: k, Size: int64(e.Size)})
		}
	}
	return out, nil
}

// hostError marks the store's errors for the Host service.
func hostError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, state.ErrNotFound):
		return fmt.Errorf("%w: %w", host.ErrNoKey, err)
	case errors.Is(err, state.ErrBadKey), errors.Is(err, state.ErrTooLarge):
		return fmt.Errorf("%w: %w", host.ErrBadKey, err)
	}
	return err
}

// StateValue is the answer to `ctl state get`.
type StateValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// Encoding is "base64" when the value is not UTF-8 and Value holds it
	// in base64; it is absent otherwise.
	Encoding string `json:"encoding,omitempty"`
}
