package config

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that its errors name their
// source on every line, and that whatever it accepts Marshals and parses
// back to an equal Config.
func FuzzParse(f *testing.F) {
	for _, tc := range cases {
		f.Add([]byte(tc.doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml", base)
		if err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "fuzz.toml") {
					t.Fatalf("error line %q does not name its source", l)
				}
			}
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := Parse(out, c.Source, c.Dir)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("Parse(Marshal()) differs:\n got %#v\nwant %#v\n%s", c2, c, out)
		}
	})
}
