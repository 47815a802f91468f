package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/plugins/host"
	"github.com/switchyard-dev/switchyard/state"
)

// TestStateCommands drives `ctl state` on the kernel's store.
func TestStateCommands(t *testing.T) {
	tk := startKernel(t, probeConfig(""), map[string]string{"probe": probeBin(t, "v1")})
	steps := []struct {
		cmd  string
		ok   bool
		want string // a substring of the data, or of the error
	}{
		{"state list", true, `[]`},
		{"state put inbox/a first value", true, `"size":11`},
		{"state put inbox/b x", true, `"key":"inbox/b"`},
		{"state put shared/motd hello all", true, `"key":"shared/motd"`},
		{"state get inbox/a", true, `"value":"first value"`},
		{"state list inbox/", true, `[{"key":"inbox/a","size":11},{"key":"inbox/b","size":1}]`},
		{"state list", true, `"shared/motd"`},
		{"state del inbox/b", true, `"deleted":"inbox/b"`},
		{"state get inbox/b", false, "no such key"},
		{"state del inbox/b", false, "no such key"},
		{"state get", false, "usage"},
		{"state put inbox/c", false, "usage"},
	}
	for _, s := range steps {
		r := tk.ctl(s.cmd)
		text := string(r.Data)
		if !r.OK {
			text = r.Error
		}
		if r.OK != s.ok || !strings.Contains(text, s.want) {
			t.Errorf("%s: ok=%v %s; want ok=%v containing %s", s.cmd, r.OK, text, s.ok, s.want)
		}
	}
	// A value that is not UTF-8 comes back in base64.
	if err := tk.k.store.Put(context.Background(), "inbox/bin", []byte{0xff, 0x00, 0xfe}); err != nil {
		t.Fatal(err)
	}
	r := tk.ctl("state get inbox/bin")
	var v StateValue
	if err := json.Unmarshal(r.Data, &v); err != nil || v.Encoding != "base64" || v.Value != "/wD+" {
		t.Errorf("state get of binary: %s %v", r.Data, err)
	}
}

// TestSlotStore: a plugin's keys live under its slot name, shared keys are
// common, and the store's errors reach the Host service marked.
func TestSlotStore(t *testing.T) {
	st, err := state.Open(t.TempDir()+"/store.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	a, b := slotStore{slot: "a", st: st}, slotStore{slot: "b", st: st}
	for _, kv := range [][2]string{{"k1", "a1"}, {"k2", "a2"}, {"shared/s", "s"}} {
		if err := a.Put(ctx, kv[0], []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, "k1", []byte("b1")); err != nil {
		t.Fatal(err)
	}
	if v, _ := st.Get(ctx, "a/k1"); string(v) != "a1" {
		t.Errorf("a/k1 = %q", v)
	}
	if v, err := b.Get(ctx, "k1"); err != nil || string(v) != "b1" {
		t.Errorf("b sees k1 = %q, %v", v, err)
	}
	if v, err := b.Get(ctx, "shared/s"); err != nil || string(v) != "s" {
		t.Errorf("b sees shared/s = %q, %v", v, err)
	}
	es, err := a.List(ctx, "")
	if err != nil || len(es) != 2 || es[0].Key != "k1" || es[1].Key != "k2" {
		t.Errorf("a lists %v, %v", es, err)
	}
	if es, _ := b.List(ctx, "shared/"); len(es) != 1 || es[0].Key != "shared/s" {
		t.Errorf("shared list %v", es)
	}
	if _, err := b.Get(ctx, "k2"); !errors.Is(err, host.ErrNoKey) {
		t.Errorf("b reads a's k2: %v", err)
	}
	if err := a.Put(ctx, "", nil); !errors.Is(err, host.ErrBadKey) {
		t.Errorf("empty key: %v", err)
	}
	if err := a.Put(ctx, "big", make([]byte, state.MaxValue+1)); !errors.Is(err, host.ErrBadKey) {
		t.Errorf("oversize value: %v", err)
	}
	if err := a.Delete(ctx, "nope"); !errors.Is(err, host.ErrNoKey) {
		t.Errorf("delete missing: %v", err)
	}
}
