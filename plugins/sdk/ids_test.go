package sdk_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// TestIDs: ids made at one instant still increase within a source, two
// sources at one instant differ in their random part, and ValidID tells
// ids from other strings.
func TestIDs(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var a, b sdk.IDs
	prev := ""
	for range 100 {
		id := a.Next(now)
		if !sdk.ValidID(id) || id <= prev {
			t.Fatalf("id %q after %q", id, prev)
		}
		prev = id
	}
	if x, y := (&sdk.IDs{}).Next(now), b.Next(now); x == y || x[:16] != y[:16] {
		t.Fatalf("two sources at one instant: %q %q", x, y)
	}
	for _, bad := range []string{"", strings.Repeat("0", sdk.IDLen-1), strings.Repeat("g", sdk.IDLen), strings.Repeat("A", sdk.IDLen)} {
		if sdk.ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}
