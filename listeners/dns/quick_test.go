package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

// TestQuickCheck: the fast path accepts only answers the full Check would,
// and leaves every doubtful one to it.
func TestQuickCheck(t *testing.T) {
	q := new(mdns.Msg).SetQuestion("www.example.test.", mdns.TypeA)
	q.Id = 4242
	qw, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	answer := func(edit func(*mdns.Msg)) []byte {
		a := new(mdns.Msg).SetReply(q)
		a.Answer = append(a.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: "www.example.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 10}})
		a.Compress = true
		if edit != nil {
			edit(a)
		}
		b, err := a.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := answer(nil)
	for _, tc := range []struct {
		name string
		ans  []byte
		want bool
	}{
		{"the answer", good, true},
		{"another id", answer(func(a *mdns.Msg) { a.Id = 1 }), false},
		{"not a response", answer(func(a *mdns.Msg) { a.Response = false }), false},
		{"another opcode", answer(func(a *mdns.Msg) { a.Opcode = mdns.OpcodeNotify }), false},
		{"another question", answer(func(a *mdns.Msg) { a.Question[0].Name = "ftp.example.test." }), false},
		{"the question in other case", answer(func(a *mdns.Msg) { a.Question[0].Name = "WWW.example.test." }), false},
		{"no question", answer(func(a *mdns.Msg) { a.Question = nil }), false},
		{"truncated", good[:len(good)-3], false},
		{"header only", good[:12], false},
		{"short", good[:5], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quickCheck(qw, tc.ans); got != tc.want {
				t.Fatalf("quickCheck = %v, want %v", got, tc.want)
			}
			if !tc.want {
				return
			}
			var a mdns.Msg
			if err := a.Unpack(tc.ans); err != nil {
				t.Fatal(err)
			}
			if err := Check(q, &a); err != nil {
				t.Fatalf("quickCheck passed what Check refuses: %v", err)
			}
		})
	}
}
