package cgiout

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

var parseCases = []struct {
	name   string
	out    string
	status int
	header http.Header // fields checked, besides Content-Type unless set
	ctype  string
	bad    bool
}{
	{name: "document", out: "Content-Type: text/plain\n\nhi", status: 200, ctype: "text/plain"},
	{name: "crlf", out: "Content-Type: text/plain\r\n\r\nhi", status: 200, ctype: "text/plain"},
	{name: "status sets the code", out: "Status: 404 Not Found\nContent-Type: text/plain\n\n", status: 404, ctype: "text/plain"},
	{name: "status without reason", out: "Status: 201\n\n", status: 201, ctype: "text/html"},
	{name: "status any case", out: "status: 418 teapot\n\n", status: 418, ctype: "text/html"},
	{name: "location means 302", out: "Location: http://example.test/x\n\n", status: 302, ctype: "text/html",
		header: http.Header{"Location": {"http://example.test/x"}}},
	{name: "location with status", out: "Status: 301 Moved\nLocation: /new\n\n", status: 301, ctype: "text/html",
		header: http.Header{"Location": {"/new"}}},
	{name: "local location is 302 too", out: "Location: /elsewhere\n\n", status: 302, ctype: "text/html"},
	{name: "no content type means html", out: "X-A: 1\n\nbody", status: 200, ctype: "text/html", header: http.Header{"X-A": {"1"}}},
	{name: "repeated fields keep order", out: "Set-Cookie: a=1\nSet-Cookie: b=2\n\n", status: 200, ctype: "text/html",
		header: http.Header{"Set-Cookie": {"a=1", "b=2"}}},
	{name: "value whitespace trimmed", out: "X-A:   v  \n\n", status: 200, ctype: "text/html", header: http.Header{"X-A": {"v"}}},
	{name: "no space after colon", out: "X-A:v\n\n", status: 200, ctype: "text/html", header: http.Header{"X-A": {"v"}}},
	{name: "hop-by-hop dropped", out: "Connection: close\nTransfer-Encoding: chunked\nX-A: 1\n\n", status: 200, ctype: "text/html",
		header: http.Header{"Connection": nil, "Transfer-Encoding": nil}},
	{name: "content length kept", out: "Content-Length: 2\n\nhi", status: 200, ctype: "text/html", header: http.Header{"Content-Length": {"2"}}},

	{name: "malformed status word", out: "Status: OK\n\n", bad: true},
	{name: "malformed status two digits", out: "Status: 20 OK\n\n", bad: true},
	{name: "malformed status four digits", out: "Status: 2000\n\n", bad: true},
	{name: "malformed status glued", out: "Status: 200OK\n\n", bad: true},
	{name: "malformed status signed", out: "Status: +20\n\n", bad: true},
	{name: "empty status", out: "Status:\n\n", bad: true},
	{name: "informational status", out: "Status: 100 Continue\n\n", bad: true},
	{name: "two statuses", out: "Status: 200\nStatus: 404\n\n", bad: true},
	{name: "no colon", out: "Content-Type text/plain\n\n", bad: true},
	{name: "bad name", out: "Bad Name: x\n\n", bad: true},
	{name: "control in value", out: "X-A: a\x01b\n\n", bad: true},
	{name: "no fields", out: "\nbody", bad: true},
	{name: "crlf no fields", out: "\r\nbody", bad: true},
	{name: "empty location", out: "Location:\n\n", bad: true},
	{name: "two locations", out: "Location: /a\nLocation: /b\n\n", bad: true},
	{name: "bad content length", out: "Content-Length: -1\n\n", bad: true},
	{name: "two content lengths", out: "Content-Length: 1\nContent-Length: 1\n\n", bad: true},
}

func TestParseHeader(t *testing.T) {
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			n := HeaderEnd([]byte(tt.out))
			if n < 0 {
				t.Fatalf("HeaderEnd found no block in %q", tt.out)
			}
			h, err := ParseHeader([]byte(tt.out[:n]))
			if tt.bad {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseHeader(%q) = %+v, %v; want ErrMalformed", tt.out, h, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHeader(%q): %v", tt.out, err)
			}
			if h.Status != tt.status {
				t.Errorf("status %d, want %d", h.Status, tt.status)
			}
			if got := h.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if h.Header.Get("Status") != "" {
				t.Errorf("Status field left in the header: %v", h.Header)
			}
			for k, want := range tt.header {
				if got := h.Header.Values(k); strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestHeaderEnd(t *testing.T) {
	for out, want := range map[string]int{
		"":                  -1,
		"A: 1\n":            -1,
		"A: 1\r\n":          -1,
		"A: 1\n\n":          6,
		"A: 1\r\n\r\nbody":  8,
		"\n":                1,
		"A: 1\nB: 2\n\nx\n": 11,
	} {
		if got := HeaderEnd([]byte(out)); got != want {
			t.Errorf("HeaderEnd(%q) = %d, want %d", out, got, want)
		}
	}
}

// TestParserPieces feeds output a byte at a time: the head is found at the
// same place, and the body that follows is returned.
func TestParserPieces(t *testing.T) {
	out := "Status: 302 Found\r\nLocation: /x\r\n\r\nbody"
	var p Parser
	for i := 0; i < len(out); i++ {
		head, body, ok, err := p.Feed([]byte{out[i]})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if i != len(out)-len("body")-1 || head.Status != 302 || len(body) != 0 {
				t.Fatalf("at byte %d: head %+v body %q", i, head, body)
			}
			if p.End() != nil {
				t.Fatalf("End after the head: %v", p.End())
			}
			return
		}
	}
	t.Fatal("no head found")
}

func TestParserLimits(t *testing.T) {
	var p Parser
	_, _, _, err := p.Feed([]byte("X-A: " + strings.Repeat("a", MaxHeader)))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversize block: %v", err)
	}
	var q Parser
	if _, _, _, err := q.Feed([]byte("X-A: 1\n")); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(q.End(), ErrMalformed) {
		t.Fatalf("End inside the block: %v", q.End())
	}
	var e Parser
	if !errors.Is(e.End(), ErrMalformed) {
		t.Fatalf("End with no output: %v", e.End())
	}
}

func TestWriter(t *testing.T) {
	tests := []struct {
		name   string
		pieces []string
		code   int
		loc    string
		body   string
	}{
		{name: "redirect", pieces: []string{"Status: 302 Found\nLoca", "tion: /there\n\n"}, code: 302, loc: "/there"},
		{name: "document in pieces", pieces: []string{"Content-Type: text/plain\n", "\nhel", "lo"}, code: 200, body: "hello"},
		{name: "malformed status", pieces: []string{"Status: abc\n\nsecret"}, code: 502, body: "502 Bad Gateway: malformed CGI output\n"},
		{name: "truncated", pieces: []string{"Content-Type: text/plain\n"}, code: 502, body: "502 Bad Gateway: malformed CGI output\n"},
		{name: "nothing", code: 502, body: "502 Bad Gateway: malformed CGI output\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			cw := NewWriter(rec)
			for _, p := range tt.pieces {
				cw.Write([]byte(p))
			}
			err := cw.Close()
			if (tt.code == 502) != (err != nil) {
				t.Errorf("Close: %v", err)
			}
			if rec.Code != tt.code || rec.Body.String() != tt.body || rec.Header().Get("Location") != tt.loc {
				t.Errorf("got %d %q Location %q; want %d %q %q", rec.Code, rec.Body.String(), rec.Header().Get("Location"), tt.code, tt.body, tt.loc)
			}
		})
	}
}

// FuzzParse: whatever the output, parsing never panics, a head it accepts
// has a final status and a Content-Type, and a block HeaderEnd finds is
// found again when fed in two pieces.
func FuzzParse(f *testing.F) {
	for _, tt := range parseCases {
		f.Add([]byte(tt.out), uint(3))
	}
	f.Fuzz(func(t *testing.T, out []byte, cut uint) {
		n := HeaderEnd(out)
		if n >= 0 {
			h, err := ParseHeader(out[:n])
			if err == nil {
				if h.Status < 200 || h.Status > 999 || h.Header.Get("Content-Type") == "" || h.Header.Get("Status") != "" {
					t.Fatalf("accepted %q as %+v", out[:n], h)
				}
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
		}
		c := int(cut % uint(len(out)+1))
		var p Parser
		_, _, ok1, err1 := p.Feed(out[:c])
		if !ok1 && err1 == nil {
			_, _, ok2, err2 := p.Feed(out[c:])
			ok1, err1 = ok2, err2
		}
		if n >= 0 && n <= MaxHeader && !ok1 && err1 == nil {
			t.Fatalf("block of %d bytes not found when fed in pieces", n)
		}
		if n < 0 && ok1 {
			t.Fatalf("found a block HeaderEnd does not see")
		}
	})
}
