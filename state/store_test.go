package state

import (
	"errors"
	"strings"
	"testing"
)

func TestKey(t *testing.T) {
	tests := []struct {
		name, slot, key, want string
		bad                   bool
	}{
		{name: "own key", slot: "inbox", key: "messages/1", want: "inbox/messages/1"},
		{name: "shared key", slot: "inbox", key: "shared/motd", want: "shared/motd"},
		{name: "utf-8", slot: "chat", key: "nick/zoë", want: "chat/nick/zoë"},
		{name: "empty", slot: "inbox", key: "", bad: true},
		{name: "shared root", slot: "inbox", key: "shared/", bad: true},
		{name: "too long", slot: "inbox", key: strings.Repeat("k", MaxKey+1), bad: true},
		{name: "longest", slot: "inbox", key: strings.Repeat("k", MaxKey), want: "inbox/" + strings.Repeat("k", MaxKey)},
		{name: "not utf-8", slot: "inbox", key: "a\xffb", bad: true},
		{name: "nul", slot: "inbox", key: "a\x00b", bad: true},
		{name: "empty slot", slot: "", key: "k", bad: true},
		{name: "slash in slot", slot: "a/b", key: "k", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Key(tt.slot, tt.key)
			if tt.bad {
				if !errors.Is(err, ErrBadKey) {
					t.Fatalf("Key(%q, %q) = %q, %v; want ErrBadKey", tt.slot, tt.key, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Key(%q, %q) = %q, %v; want %q", tt.slot, tt.key, got, err, tt.want)
			}
			back, ok := PluginKey(tt.slot, got)
			if !ok || back != tt.key {
				t.Errorf("PluginKey(%q, %q) = %q, %v; want %q", tt.slot, got, back, ok, tt.key)
			}
		})
	}
	for _, full := range []string{"other/k", "inboxx/k", "inbox/", "inbox"} {
		if k, ok := PluginKey("inbox", full); ok {
			t.Errorf("PluginKey(inbox, %q) = %q, true; it belongs to no key of inbox", full, k)
		}
	}
}

func FuzzKey(f *testing.F) {
	for _, s := range []string{"k", "shared/x", "", "a\x00", "shared/", "a/b/c"} {
		f.Add("inbox", s)
	}
	f.Fuzz(func(t *testing.T, slot, key string) {
		full, err := Key(slot, key)
		if err != nil {
			return
		}
		back, ok := PluginKey(slot, full)
		if !ok || back != key {
			t.Fatalf("Key(%q, %q) = %q, but PluginKey gives %q, %v", slot, key, full, back, ok)
		}
	})
}
