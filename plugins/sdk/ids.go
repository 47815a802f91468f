package sdk

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"time"
)

// IDLen is the length of an id IDs makes.
const IDLen = 24

// IDs makes ids for things a plugin stores (a message, an upload): 24
// lowercase hex digits, 16 for the time the id was made, as nanoseconds
// since 1970, then 8 random ones from crypto/rand. Ids sort by the time they
// were made, so a List of their keys is in arrival order. Within one
// process the time part strictly increases, so its ids are distinct;
// between processes (the old and new version of a plugin both serve during
// a swap) the random part keeps them apart. The zero value is ready and
// safe for concurrent use.
type IDs struct {
	last atomic.Int64 // the time part of the latest id
}

// Next returns a new id for something made at now.
func (s *IDs) Next(now time.Time) string {
	var t int64
	for {
		last := s.last.Load()
		t = max(now.UnixNano(), last+1)
		if s.last.CompareAndSwap(last, t) {
			break
		}
	}
	var b [12]byte
	for i := range 8 {
		b[i] = byte(uint64(t) >> (56 - 8*i))
	}
	_, _ = rand.Read(b[8:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id has the shape of an id IDs makes.
func ValidID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
