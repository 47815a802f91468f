package main

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// fixed is the time the tests' servers tell.
var fixed = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// newTestServer returns a server of version whose clock says fixed.
func newTestServer(version string) *server {
	s := newServer(version)
	s.now = func() time.Time { return fixed }
	return s
}

// start runs a server of version v1 in memory with settings.
func start(t *testing.T, settings any) *sdktest.Plugin {
	t.Helper()
	return sdktest.New(t, newTestServer("v1").plugin(), settings)
}

// expect sends line and fails the test unless the replies are want
// exactly.
func expect(t *testing.T, s *sdktest.Session, line string, want ...string) {
	t.Helper()
	if got := s.Send(line); !slices.Equal(got, want) {
		t.Fatalf("%q: got %q, want %q", line, got, want)
	}
}

// expectCode sends line and fails the test unless there is one reply and
// it begins with code (for example "503 5.5.1").
func expectCode(t *testing.T, s *sdktest.Session, line, code string) {
	t.Helper()
	if got := s.Send(line); len(got) != 1 || !strings.HasPrefix(got[0], code+" ") {
		t.Fatalf("%q: got %q, want one %s reply", line, got, code)
	}
}

// queued sends the terminator of a message and returns the id of the
// queued message, failing the test unless it was queued.
func queued(t *testing.T, s *sdktest.Session) string {
	t.Helper()
	got := s.Send(".")
	if len(got) != 1 || !strings.HasPrefix(got[0], "250 2.0.0 Ok: queued as ") {
		t.Fatalf("end of data: %q", got)
	}
	id := strings.TrimPrefix(got[0], "250 2.0.0 Ok: queued as ")
	if !validID(id) {
		t.Fatalf("queued as %q, not an id", id)
	}
	return id
}

// stored returns the message id and its envelope from p's store.
func stored(t *testing.T, p *sdktest.Plugin, id string) (string, envelope) {
	t.Helper()
	ctx := t.Context()
	msg, err := p.Store().Get(ctx, messagePrefix+id)
	if err != nil {
		t.Fatalf("message %s: %v", id, err)
	}
	b, err := p.Store().Get(ctx, envelopePrefix+id)
	if err != nil {
		t.Fatalf("envelope %s: %v", id, err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("envelope %s: %v in %s", id, err, b)
	}
	return string(msg), env
}

// keys lists the keys in p's store.
func keys(t *testing.T, p *sdktest.Plugin) []string {
	t.Helper()
	es, err := p.Store().List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, e := range es {
		ks = append(ks, e.GetKey())
	}
	return ks
}

func TestDescribe(t *testing.T) {
	p := start(t, nil)
	d := p.Describe
	if d.GetName() != "smtp" || d.GetVersion() != "v1" || !slices.Equal(d.GetProtocols(), []string{"line"}) {
		t.Errorf("Describe = %v", d)
	}
	if d.GetLineFailReply() != "451 4.3.0 Temporary failure, please try again" {
		t.Errorf("fail reply %q", d.GetLineFailReply())
	}
}

func TestTransaction(t *testing.T) {
	p := start(t, map[string]any{"hostname": "mx.test"})
	s, greeting := p.Dial()
	if want := []string{"220 mx.test ESMTP switchyard-smtp v1 ready"}; !slices.Equal(greeting, want) {
		t.Fatalf("greeting %q, want %q", greeting, want)
	}
	expect(t, s, "EHLO client.test",
		"250-mx.test greets client.test",
		"250-SIZE 10485760",
		"250-8BITMIME",
		"250-PIPELINING",
		"250-ENHANCEDSTATUSCODES",
		"250 HELP")
	expect(t, s, "MAIL FROM:<alice@example.org> SIZE=120 BODY=8BITMIME", "250 2.1.0 Ok")
	expect(t, s, "RCPT TO:<bob@example.net>", "250 2.1.5 Ok")
	expect(t, s, "RCPT TO:<carol@example.net>", "250 2.1.5 Ok")
	expect(t, s, "DATA", "354 End data with <CR><LF>.<CR><LF>")
	if !s.Collecting() {
		t.Fatal("DATA did not collect the message")
	}
	for _, line := range []string{"Subject: hi", "", "..leading dot", "...two dots", ".", "plain ."} {
		if line == "." {
			line = ".." // a lone dot, stuffed
		}
		if got := s.Send(line); got != nil {
			t.Fatalf("data line %q answered %q", line, got)
		}
	}
	id := queued(t, s)

	msg, env := stored(t, p, id)
	body := "Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nplain .\r\n"
	want := "Return-Path: <alice@example.org>\r\n" +
		"Received: from client.test ([192.0.2.1])\r\n" +
		"\tby mx.test (switchyard-smtp v1) with ESMTP id " + id + ";\r\n" +
		"\t" + fixed.Local().Format(time.RFC1123Z) + "\r\n" + body
	if msg != want {
		t.Errorf("stored message\n%q\nwant\n%q", msg, want)
	}
	wantEnv := envelope{ID: id, From: "alice@example.org", To: []string{"bob@example.net", "carol@example.net"},
		Helo: "client.test", Remote: "192.0.2.1:49152", Received: fixed, Size: int64(len(body))}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("envelope %+v, want %+v", env, wantEnv)
	}

	// The transaction is over; the session goes on.
	st := s.State()
	for _, k := range []string{keyFrom, keyRcpt, keySize, keyBody, keyData} {
		if _, ok := st[k]; ok {
			t.Errorf("state keeps %s after the message: %q", k, st)
		}
	}
	if st[keyHelo] != "client.test" || st[keyProto] != "ESMTP" {
		t.Errorf("state %q", st)
	}
	expectCode(t, s, "RCPT TO:<bob@example.net>", "503 5.5.1")

	// A second message, to one recipient, is named in its Received
	// header, and sorts after the first.
	expect(t, s, "MAIL FROM:<>", "250 2.1.0 Ok")
	expect(t, s, "RCPT TO:<Postmaster>", "250 2.1.5 Ok")
	expect(t, s, "DATA", "354 End data with <CR><LF>.<CR><LF>")
	s.Send("bounce")
	id2 := queued(t, s)
	if id2 <= id {
		t.Errorf("second id %s does not sort after %s", id2, id)
	}
	msg, env = stored(t, p, id2)
	if !strings.HasPrefix(msg, "Return-Path: <>\r\n") || !strings.Contains(msg, "\r\n\tfor <Postmaster>;\r\n") || !strings.HasSuffix(msg, "\r\nbounce\r\n") {
		t.Errorf("second message %q", msg)
	}
	if env.From != "" || !slices.Equal(env.To, []string{"Postmaster"}) {
		t.Errorf("second envelope %+v", env)
	}
	if got, want := keys(t, p), []string{envelopePrefix + id, envelopePrefix + id2, messagePrefix + id, messagePrefix + id2}; !slices.Equal(got, want) {
		t.Errorf("store keys %q, want %q", got, want)
	}

	expect(t, s, "QUIT", "221 2.0.0 mx.test closing connection")
	if !s.Closing() {
		t.Error("QUIT did not close the session")
	}
	if got := s.CloseFor("closed by handler"); len(got) != 0 {
		t.Errorf("close replied %q", got)
	}
}

// TestSwapMidTransaction: a session moves to other processes (a swap to a
// new version) between MAIL and RCPT and between DATA and the end of the
// message, and the message is queued all the same.
func TestSwapMidTransaction(t *testing.T) {
	store := sdktest.NewStore()
	var ps []*sdktest.Plugin
	for _, v := range []string{"v1", "v2", "v3"} {
		p, err := sdktest.Start(t, newTestServer(v).plugin(), nil, sdktest.Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	s, _ := ps[0].Dial()
	expect(t, s, "HELO client.test", "250 localhost")
	expect(t, s, "MAIL FROM:<alice@example.org>", "250 2.1.0 Ok")
	s.MoveTo(ps[1])
	expect(t, s, "RCPT TO:<bob@example.net>", "250 2.1.5 Ok")
	expect(t, s, "DATA", "354 End data with <CR><LF>.<CR><LF>")
	s.Send("Subject: swapped")
	s.MoveTo(ps[2])
	s.Send("")
	s.Send("body")
	id := queued(t, s)
	msg, env := stored(t, ps[2], id)
	if !strings.Contains(msg, "(switchyard-smtp v3) with SMTP id "+id) || !strings.HasSuffix(msg, "\r\nSubject: swapped\r\n\r\nbody\r\n") {
		t.Errorf("message %q", msg)
	}
	if env.From != "alice@example.org" || !slices.Equal(env.To, []string{"bob@example.net"}) || env.Helo != "client.test" {
		t.Errorf("envelope %+v", env)
	}
}

// dial dials p and sends setup, failing the test unless each line is
// answered with a 2xx or 3xx reply.
func dial(t *testing.T, p *sdktest.Plugin, setup ...string) *sdktest.Session {
	t.Helper()
	s, _ := p.Dial()
	for _, line := range setup {
		got := s.Send(line)
		if len(got) == 0 || (got[len(got)-1][0] != '2' && got[len(got)-1][0] != '3') {
			t.Fatalf("setup %q: %q", line, got)
		}
	}
	return s
}

// Commands that the table tests set sessions up with.
const (
	ehlo = "EHLO client.test"
	mail = "MAIL FROM:<alice@example.org>"
	rcpt = "RCPT TO:<bob@example.net>"
)

func TestCommands(t *testing.T) {
	p := start(t, map[string]any{"max_size": 1000})
	tests := []struct {
		name  string
		setup []string
		line  string
		code  string // the reply's code and enhanced code
	}{
		// Bad sequence.
		{"MAIL before EHLO", nil, mail, "503 5.5.1"},
		{"RCPT before MAIL", []string{ehlo}, rcpt, "503 5.5.1"},
		{"DATA before MAIL", []string{ehlo}, "DATA", "503 5.5.1"},
		{"DATA before RCPT", []string{ehlo, mail}, "DATA", "503 5.5.1"},
		{"MAIL twice", []string{ehlo, mail}, "MAIL FROM:<carol@example.org>", "503 5.5.1"},
		{"RCPT after RSET", []string{ehlo, mail, rcpt, "RSET"}, rcpt, "503 5.5.1"},
		{"RCPT after EHLO again", []string{ehlo, mail, ehlo}, rcpt, "503 5.5.1"},

		// Syntax.
		{"empty line", nil, "", "500 5.5.2"},
		{"unknown command", nil, "FOO bar", "500 5.5.2"},
		{"EXPN", nil, "EXPN staff", "502 5.5.1"},
		{"EHLO without domain", nil, "EHLO", "501 5.5.4"},
		{"HELO without domain", nil, "HELO", "501 5.5.4"},
		{"EHLO with two words", nil, "EHLO a b", "501 5.5.4"},
		{"MAIL without FROM", []string{ehlo}, "MAIL <alice@example.org>", "501 5.5.4"},
		{"MAIL without brackets", []string{ehlo}, "MAIL FROM:alice@example.org", "501 5.5.4"},
		{"MAIL unclosed bracket", []string{ehlo}, "MAIL FROM:<alice@example.org", "501 5.5.4"},
		{"MAIL junk after path", []string{ehlo}, "MAIL FROM:<alice@example.org>x", "501 5.5.4"},
		{"MAIL bad address", []string{ehlo}, "MAIL FROM:<alice example.org>", "501 5.1.7"},
		{"MAIL no domain", []string{ehlo}, "MAIL FROM:<alice@>", "501 5.1.7"},
		{"MAIL double dot", []string{ehlo}, "MAIL FROM:<a..b@example.org>", "501 5.1.7"},
		{"MAIL bad SIZE", []string{ehlo}, "MAIL FROM:<a@example.org> SIZE=ten", "501 5.5.4"},
		{"MAIL SIZE twice", []string{ehlo}, "MAIL FROM:<a@example.org> SIZE=1 SIZE=2", "501 5.5.4"},
		{"MAIL bad BODY", []string{ehlo}, "MAIL FROM:<a@example.org> BODY=BINARYMIME", "501 5.5.4"},
		{"MAIL bad parameter", []string{ehlo}, "MAIL FROM:<a@example.org> =x", "501 5.5.4"},
		{"MAIL unknown parameter", []string{ehlo}, "MAIL FROM:<a@example.org> SMTPUTF8", "555 5.5.4"},
		{"MAIL SIZE over the limit", []string{ehlo}, "MAIL FROM:<a@example.org> SIZE=1001", "552 5.3.4"},
		{"RCPT without TO", []string{ehlo, mail}, "RCPT <bob@example.net>", "501 5.5.4"},
		{"RCPT null path", []string{ehlo, mail}, "RCPT TO:<>", "501 5.1.3"},
		{"RCPT bad address", []string{ehlo, mail}, "RCPT TO:<bob>", "501 5.1.3"},
		{"RCPT parameter", []string{ehlo, mail}, "RCPT TO:<bob@example.net> NOTIFY=NEVER", "555 5.5.4"},
		{"DATA with argument", []string{ehlo, mail, rcpt}, "DATA now", "501 5.5.4"},
		{"RSET with argument", nil, "RSET now", "501 5.5.4"},
		{"VRFY without argument", nil, "VRFY", "501 5.5.4"},

		// Good commands.
		{"NOOP", nil, "NOOP", "250 2.0.0"},
		{"NOOP with argument", nil, "NOOP hello", "250 2.0.0"},
		{"RSET", []string{ehlo, mail, rcpt}, "RSET", "250 2.0.0"},
		{"VRFY", nil, "VRFY bob", "252 2.5.0"},
		{"HELP", nil, "HELP", "214 2.0.0"},
		{"lower case", []string{"ehlo client.test", "mail from:<alice@example.org>"}, "rcpt to:<bob@example.net>", "250 2.1.5"},
		{"mixed case", []string{"eHlO client.test"}, "Mail From:<alice@example.org>", "250 2.1.0"},
		{"MAIL space after colon", []string{ehlo}, "MAIL FROM: <alice@example.org>", "250 2.1.0"},
		{"MAIL null path", []string{ehlo}, "MAIL FROM:<>", "250 2.1.0"},
		{"MAIL SIZE at the limit", []string{ehlo}, "MAIL FROM:<a@example.org> SIZE=1000 body=7bit", "250 2.1.0"},
		{"MAIL source route", []string{ehlo}, "MAIL FROM:<@relay.test,@b.test:alice@example.org>", "250 2.1.0"},
		{"MAIL quoted local part", []string{ehlo}, `MAIL FROM:<"a b>c"@example.org>`, "250 2.1.0"},
		{"MAIL address literal", []string{ehlo}, "MAIL FROM:<a@[192.0.2.7]>", "250 2.1.0"},
		{"MAIL after HELO", []string{"HELO client.test"}, mail, "250 2.1.0"},
		{"RCPT postmaster", []string{ehlo, mail}, "RCPT TO:<postmaster>", "250 2.1.5"},
		{"RCPT twice the same", []string{ehlo, mail, rcpt}, rcpt, "250 2.1.5"},
		{"DATA", []string{ehlo, mail, rcpt}, "DATA", "354"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := dial(t, p, tc.setup...)
			expectCode(t, s, tc.line, tc.code)
		})
	}
}

func TestMailState(t *testing.T) {
	p := start(t, nil)
	s := dial(t, p, ehlo, "MAIL FROM:<@relay.test:alice@example.org> SIZE=0042 BODY=8bitmime", rcpt, "RCPT TO:<carol@example.net>", rcpt)
	want := map[string]string{
		keyHelo: "client.test", keyProto: "ESMTP",
		keyFrom: "<alice@example.org>", keySize: "42", keyBody: "8BITMIME",
		keyRcpt: `["bob@example.net","carol@example.net"]`,
	}
	if got := s.State(); !reflect.DeepEqual(got, want) {
		t.Errorf("state %q, want %q", got, want)
	}
	expect(t, s, "RSET", "250 2.0.0 Ok")
	if got, want := s.State(), map[string]string{keyHelo: "client.test", keyProto: "ESMTP"}; !reflect.DeepEqual(got, want) {
		t.Errorf("state after RSET %q, want %q", got, want)
	}
	expectCode(t, s, "DATA", "503 5.5.1")
	expect(t, s, mail, "250 2.1.0 Ok")
}

func TestHELO(t *testing.T) {
	p := start(t, map[string]any{"hostname": "mx.test"})
	s := dial(t, p)
	expect(t, s, "HELO client.test", "250 mx.test")
	if st := s.State(); st[keyProto] != "SMTP" || st[keyHelo] != "client.test" {
		t.Errorf("state %q", st)
	}
}

func TestSizeLimit(t *testing.T) {
	p := start(t, map[string]any{"max_size": 100})
	s := dial(t, p)
	if got := s.Send(ehlo); !slices.Contains(got, "250-SIZE 100") {
		t.Fatalf("EHLO %q does not announce SIZE 100", got)
	}
	expect(t, s, "MAIL FROM:<alice@example.org> SIZE=101", "552 5.3.4 Message size exceeds fixed maximum message size")
	expect(t, s, "MAIL FROM:<alice@example.org> SIZE=100", "250 2.1.0 Ok")
	expect(t, s, rcpt, "250 2.1.5 Ok")
	expect(t, s, "DATA", "354 End data with <CR><LF>.<CR><LF>")
	for range 3 {
		s.Send(strings.Repeat("x", 48)) // 50 bytes with CR LF
	}
	expect(t, s, ".", "552 5.3.4 Error: message too big (at most 100 bytes)")
	if ks := keys(t, p); len(ks) != 0 {
		t.Errorf("the store holds %q", ks)
	}
	expectCode(t, s, rcpt, "503 5.5.1") // the transaction was reset

	// Exactly at the limit is fine.
	s = dial(t, p, ehlo, mail, rcpt, "DATA")
	s.Send(strings.Repeat("x", 48))
	s.Send(strings.Repeat("y", 48))
	queued(t, s)
}

func TestMaxRecipients(t *testing.T) {
	p := start(t, map[string]any{"max_recipients": 2})
	s := dial(t, p, ehlo, mail, "RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>")
	expect(t, s, "RCPT TO:<c@example.net>", "452 4.5.3 Error: too many recipients")
	expect(t, s, "RCPT TO:<a@example.net>", "250 2.1.5 Ok")
	s.Send("DATA")
	_, env := stored(t, p, queued(t, s))
	if !slices.Equal(env.To, []string{"a@example.net", "b@example.net"}) {
		t.Errorf("recipients %q", env.To)
	}
}

func TestTooLong(t *testing.T) {
	p := start(t, nil)
	s := dial(t, p, ehlo)
	if got, want := s.SendTooLong("MAIL FROM:<aaaa"), []string{"500 5.5.2 Error: line too long"}; !slices.Equal(got, want) {
		t.Fatalf("too long: %q, want %q", got, want)
	}
	expect(t, s, mail, "250 2.1.0 Ok")
}

func TestTooManyErrors(t *testing.T) {
	p := start(t, map[string]any{"hostname": "mx.test"})
	s := dial(t, p)
	for i := 1; i < maxErrors; i++ {
		expectCode(t, s, "BOGUS", "500 5.5.2")
	}
	expect(t, s, "BOGUS", "500 5.5.2 Error: command not recognized", "421 4.7.0 mx.test Error: too many errors")
	if !s.Closing() {
		t.Error("the session was not closed")
	}
}

func TestClose(t *testing.T) {
	p := start(t, map[string]any{"hostname": "mx.test"})
	tests := []struct {
		reason string
		want   []string
	}{
		{"idle timeout", []string{"421 4.4.2 mx.test closing connection"}},
		{"shutdown", []string{"421 4.4.2 mx.test closing connection"}},
		{"client closed", nil},
		{"closed by handler", nil},
	}
	for _, tc := range tests {
		t.Run(tc.reason, func(t *testing.T) {
			s := dial(t, p, ehlo, mail, rcpt)
			if got := s.CloseFor(tc.reason); !slices.Equal(got, tc.want) {
				t.Errorf("close %q: %q, want %q", tc.reason, got, tc.want)
			}
			if ks := keys(t, p); len(ks) != 0 {
				t.Errorf("the store holds %q", ks)
			}
		})
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name     string
		settings map[string]any
		ok       bool
	}{
		{"none", nil, true},
		{"all", map[string]any{"hostname": "mx.example.org", "max_size": 1000, "max_recipients": 5}, true},
		{"largest max_size", map[string]any{"max_size": maxMaxSize}, true},
		{"address literal hostname", map[string]any{"hostname": "[192.0.2.1]"}, true},
		{"unknown key", map[string]any{"max_message": 1000}, false},
		{"max_size of the store's limit", map[string]any{"max_size": 16 << 20}, false},
		{"max_size zero", map[string]any{"max_size": 0}, false},
		{"max_size negative", map[string]any{"max_size": -1}, false},
		{"max_size a string", map[string]any{"max_size": "10M"}, false},
		{"empty hostname", map[string]any{"hostname": ""}, false},
		{"hostname with a space", map[string]any{"hostname": "mx example"}, false},
		{"max_recipients zero", map[string]any{"max_recipients": 0}, false},
		{"max_recipients too many", map[string]any{"max_recipients": maxMaxRecipients + 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sdktest.Start(t, newPlugin("v1"), tc.settings, sdktest.Options{})
			if (err == nil) != tc.ok {
				t.Errorf("settings %v: error %v, want ok %v", tc.settings, err, tc.ok)
			}
		})
	}
}

// failingStore is an in-memory store whose Puts of keys that begin with
// fail fail.
type failingStore struct {
	*sdktest.Store
	fail string
}

var errDiskFull = errors.New("disk full")

func (f failingStore) Put(ctx context.Context, key string, value []byte) error {
	if strings.HasPrefix(key, f.fail) {
		return errDiskFull
	}
	return f.Store.Put(ctx, key, value)
}

// TestStoreFails: when the store fails, the client is told to retry, the
// transaction is reset and nothing is left in the store.
func TestStoreFails(t *testing.T) {
	for _, prefix := range []string{messagePrefix, envelopePrefix} {
		t.Run(strings.TrimSuffix(prefix, "/"), func(t *testing.T) {
			p, err := sdktest.Start(t, newPlugin("v1"), nil, sdktest.Options{Store: failingStore{sdktest.NewStore(), prefix}})
			if err != nil {
				t.Fatal(err)
			}
			s := dial(t, p, ehlo, mail, rcpt, "DATA")
			s.Send("hello")
			expect(t, s, ".", "451 4.3.0 Error: message not stored, please try again")
			if ks := keys(t, p); len(ks) != 0 {
				t.Errorf("the store holds %q", ks)
			}
			expectCode(t, s, rcpt, "503 5.5.1")
			expect(t, s, mail, "250 2.1.0 Ok")
		})
	}
}

// TestAfterFailedMessage: a line that finds the data key set follows a
// message whose event failed (the client got the fail reply, the state
// stayed as DATA left it); the transaction is over. sdktest cannot fail a
// Block event without a handler that panics, so this calls the handler
// with such a state directly.
func TestAfterFailedMessage(t *testing.T) {
	h := handler{newTestServer("v1")}
	c := &sdk.Conn{State: map[string]string{
		keyHelo: "client.test", keyProto: "ESMTP", keyFrom: "<alice@example.org>",
		keyRcpt: `["bob@example.net"]`, keyData: "1",
	}}
	h.Line(c, "MAIL FROM:<carol@example.org>")
	want := map[string]string{keyHelo: "client.test", keyProto: "ESMTP", keyFrom: "<carol@example.org>"}
	if !reflect.DeepEqual(c.State, want) {
		t.Errorf("state %q, want %q", c.State, want)
	}
}

func TestIDs(t *testing.T) {
	var src idSource
	now := time.Now()
	var last string
	for range 1000 {
		id := src.next(now) // the same clock reading every time
		if !validID(id) || id <= last {
			t.Fatalf("id %q after %q", id, last)
		}
		last = id
	}
	// Another process's ids at the same time differ by their random part.
	var other idSource
	if a, b := other.next(fixed), (&idSource{}).next(fixed); a == b || a[:16] != b[:16] {
		t.Errorf("ids of two sources %s, %s", a, b)
	}
}
