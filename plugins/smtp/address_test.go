package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// pathTests are parsePath's cases; they also seed FuzzParsePath.
var pathTests = []struct {
	in      string
	mailbox string
	params  []string
	err     error
}{
	{in: "<a@example.org>", mailbox: "a@example.org"},
	{in: "<>", mailbox: ""},
	{in: "<> SIZE=10", params: []string{"SIZE=10"}},
	{in: " <a@example.org>  SIZE=10 BODY=8BITMIME", mailbox: "a@example.org", params: []string{"SIZE=10", "BODY=8BITMIME"}},
	{in: "<first.last+tag@sub.example.org>", mailbox: "first.last+tag@sub.example.org"},
	{in: `<"john doe"@example.org>`, mailbox: `"john doe"@example.org`},
	{in: `<"a>b"@example.org>`, mailbox: `"a>b"@example.org`},
	{in: `<"a\"b"@example.org>`, mailbox: `"a\"b"@example.org`},
	{in: "<@relay.example:a@example.org>", mailbox: "a@example.org"},
	{in: "<@r1.example,@r2.example:a@example.org>", mailbox: "a@example.org"},
	{in: "<a@[192.0.2.1]>", mailbox: "a@[192.0.2.1]"},
	{in: "<a@[IPv6:2001:db8::1]>", mailbox: "a@[IPv6:2001:db8::1]"},
	{in: "<postmaster>", mailbox: "postmaster"},
	{in: "<PostMaster>", mailbox: "PostMaster"},
	{in: "<a@under_score.example>", mailbox: "a@under_score.example"},
	{in: "<" + strings.Repeat("a", 64) + "@example.org>", mailbox: strings.Repeat("a", 64) + "@example.org"},

	{in: "", err: errPathSyntax},
	{in: "a@example.org", err: errPathSyntax},
	{in: "<a@example.org", err: errPathSyntax},
	{in: "<a@example.org>SIZE=1", err: errPathSyntax},
	{in: `<"a@example.org>`, err: errPathSyntax},
	{in: "<a>", err: errBadMailbox},
	{in: "<a@>", err: errBadMailbox},
	{in: "<@example.org>", err: errBadMailbox},
	{in: "<a b@example.org>", err: errBadMailbox},
	{in: "<.a@example.org>", err: errBadMailbox},
	{in: "<a.@example.org>", err: errBadMailbox},
	{in: "<a@example..org>", err: errBadMailbox},
	{in: "<a@-example.org>", err: errBadMailbox},
	{in: "<a@example.org.>", err: errBadMailbox},
	{in: "<a@b@example.org>", err: errBadMailbox},
	{in: "<a@[300.0.0.1]>", err: errBadMailbox},
	{in: "<a@[IPv6:192.0.2.1]>", err: errBadMailbox},
	{in: "<a@[::1]>", err: errBadMailbox},
	{in: "<relay.example:a@example.org>", err: errBadMailbox},
	{in: "<@relay.example:>", err: errBadMailbox},
	{in: "<\"a\x01\"@example.org>", err: errBadMailbox},
	{in: "<é@example.org>", err: errBadMailbox},
	{in: "<" + strings.Repeat("a", 65) + "@example.org>", err: errBadMailbox},
}

func TestParsePath(t *testing.T) {
	for _, tc := range pathTests {
		t.Run(tc.in, func(t *testing.T) {
			mailbox, params, err := parsePath(tc.in)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if mailbox != tc.mailbox || !slices.Equal(params, tc.params) {
				t.Errorf("got %q %q, want %q %q", mailbox, params, tc.mailbox, tc.params)
			}
		})
	}
}

func TestParseParam(t *testing.T) {
	tests := []struct {
		in, key, value string
		ok             bool
	}{
		{"SIZE=10", "SIZE", "10", true},
		{"body=8bitmime", "BODY", "8bitmime", true},
		{"SMTPUTF8", "SMTPUTF8", "", true},
		{"X-FOO=bar", "X-FOO", "bar", true},
		{"=10", "", "", false},
		{"SIZE=", "", "", false},
		{"-X=1", "", "", false},
		{"SIZE=1=2", "", "", false},
		{"SIZÉ=1", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			key, value, ok := parseParam(tc.in)
			if key != tc.key || value != tc.value || ok != tc.ok {
				t.Errorf("got %q %q %v, want %q %q %v", key, value, ok, tc.key, tc.value, tc.ok)
			}
		})
	}
}

// FuzzParsePath: parsePath never panics, and a mailbox it accepts is
// printable ASCII that parses again to itself, so it is safe to put in a
// header or a reply.
func FuzzParsePath(f *testing.F) {
	for _, tc := range pathTests {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		mailbox, _, err := parsePath(in)
		if err != nil || mailbox == "" {
			return
		}
		for i := 0; i < len(mailbox); i++ {
			if c := mailbox[i]; c < 32 || c > 126 {
				t.Fatalf("mailbox %q of %q holds byte %#x", mailbox, in, c)
			}
		}
		again, params, err := parsePath("<" + mailbox + ">")
		if err != nil || again != mailbox || len(params) != 0 {
			t.Fatalf("mailbox %q of %q parses again as %q %q %v", mailbox, in, again, params, err)
		}
	})
}
