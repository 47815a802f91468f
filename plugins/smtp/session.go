package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// The session state keys: the whole of an SMTP session, kept by the
// kernel between events. They are the contract between versions of the
// plugin — the next line of a session may be answered by a newer version
// after a swap, or by a restarted process — so a version that changes them
// must convert older sessions in a Migrate.
const (
	// keyHelo is the domain the client gave in HELO or EHLO; absent
	// before it has.
	keyHelo = "helo"
	// keyProto is "ESMTP" after EHLO, "SMTP" after HELO; it names the
	// protocol in the Received header.
	keyProto = "proto"
	// keyFrom is the reverse path of the open transaction in angle
	// brackets ("<a@example.org>", "<>" for the null path); present from
	// MAIL until the transaction ends.
	keyFrom = "from"
	// keyRcpt is the recipients of the open transaction, a JSON array of
	// mailboxes without brackets.
	keyRcpt = "rcpt"
	// keySize is the SIZE= the client declared with MAIL, in bytes.
	keySize = "size"
	// keyBody is the BODY= the client declared with MAIL ("7BIT" or
	// "8BITMIME").
	keyBody = "body"
	// keyData is "1" from the 354 that starts a message until the message
	// is answered. A line that finds it set follows a DATA whose message
	// event failed (the client got the fail reply), so the transaction
	// is over.
	keyData = "data"
	// keyErrors counts the session's bad commands.
	keyErrors = "errors"
)

// handler answers SMTP sessions. It keeps nothing of a session: all of it
// is in the Conn's State.
type handler struct{ s *server }

var (
	_ sdk.LineHandler    = handler{}
	_ sdk.BlockHandler   = handler{}
	_ sdk.TooLongHandler = handler{}
)

// session is one event of one SMTP session: the Conn and the settings
// the event runs with.
type session struct {
	*sdk.Conn
	srv *server
	cfg *config
}

func (h handler) session(c *sdk.Conn) *session {
	return &session{Conn: c, srv: h.s, cfg: h.s.config()}
}

// Open greets the client.
func (h handler) Open(c *sdk.Conn) {
	s := h.session(c)
	s.Replyf("220 %s ESMTP switchyard-smtp %s ready", s.cfg.hostname, s.srv.version)
}

// Line answers one command.
func (h handler) Line(c *sdk.Conn, line string) {
	s := h.session(c)
	if s.State[keyData] != "" {
		// The event that carried the message failed: the client was told
		// 451 and the transaction is over.
		s.reset()
	}
	verb, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch strings.ToUpper(verb) {
	case "EHLO":
		s.hello(arg, true)
	case "HELO":
		s.hello(arg, false)
	case "MAIL":
		s.mail(arg)
	case "RCPT":
		s.rcpt(arg)
	case "DATA":
		s.data(arg)
	case "RSET":
		if arg != "" {
			s.fail("501 5.5.4 Syntax: RSET")
			return
		}
		s.reset()
		s.Reply("250 2.0.0 Ok")
	case "NOOP":
		s.Reply("250 2.0.0 Ok")
	case "QUIT":
		s.Replyf("221 2.0.0 %s closing connection", s.cfg.hostname)
		s.Close()
	case "VRFY":
		if arg == "" {
			s.fail("501 5.5.4 Syntax: VRFY address")
			return
		}
		s.Reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
	case "HELP":
		s.Reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT")
	case "EXPN", "TURN":
		s.fail("502 5.5.1 Error: command not implemented")
	case "":
		s.fail("500 5.5.2 Error: bad syntax")
	default:
		s.fail("500 5.5.2 Error: command not recognized")
	}
}

// TooLong answers a command line longer than the listener's max_line.
func (h handler) TooLong(c *sdk.Conn, _ string) {
	h.session(c).fail("500 5.5.2 Error: line too long")
}

// Close says goodbye when the kernel, not the client, ends the session.
// An open transaction is dropped with the session: nothing of it was
// stored.
func (h handler) Close(c *sdk.Conn) {
	switch c.Reason {
	case "idle timeout", "shutdown":
		c.Replyf("421 4.4.2 %s closing connection", h.s.config().hostname)
	}
}

// fail answers a bad command with reply and counts it; after maxErrors the
// session ends.
func (s *session) fail(reply string) {
	s.Reply(reply)
	n, _ := strconv.Atoi(s.State[keyErrors])
	n++
	s.State[keyErrors] = strconv.Itoa(n)
	if n >= maxErrors {
		s.Replyf("421 4.7.0 %s Error: too many errors", s.cfg.hostname)
		s.Close()
	}
}

// reset ends the open transaction, if any, by deleting the keys of a
// transaction.
func (s *session) reset() {
	for _, k := range [...]string{keyFrom, keyRcpt, keySize, keyBody, keyData} {
		delete(s.State, k)
	}
}

// recipients returns the open transaction's recipients.
func (s *session) recipients() []string {
	var rs []string
	if v := s.State[keyRcpt]; v != "" {
		_ = json.Unmarshal([]byte(v), &rs) // the state is ours; a bad value is no recipients
	}
	return rs
}

func (s *session) hello(domain string, extended bool) {
	verb := "HELO"
	if extended {
		verb = "EHLO"
	}
	if !validHelo(domain) {
		s.fail("501 5.5.4 Syntax: " + verb + " hostname")
		return
	}
	s.reset()
	s.State[keyHelo] = domain
	if !extended {
		s.State[keyProto] = "SMTP"
		s.Replyf("250 %s", s.cfg.hostname)
		return
	}
	s.State[keyProto] = "ESMTP"
	s.Replyf("250-%s greets %s", s.cfg.hostname, domain)
	s.Replyf("250-SIZE %d", s.cfg.maxSize)
	s.Reply("250-8BITMIME")
	s.Reply("250-PIPELINING")
	s.Reply("250-ENHANCEDSTATUSCODES")
	s.Reply("250 HELP")
}

// validHelo reports whether d may be the argument of HELO or EHLO: a
// domain or address literal, taken leniently (any printable ASCII without
// spaces, at most 255 bytes), since it only goes into the Received header.
func validHelo(d string) bool {
	if d == "" || len(d) > maxDomain {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

func (s *session) mail(arg string) {
	switch {
	case s.State[keyHelo] == "":
		s.fail("503 5.5.1 Error: send HELO/EHLO first")
		return
	case s.State[keyFrom] != "":
		s.fail("503 5.5.1 Error: nested MAIL command")
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		s.fail("501 5.5.4 Syntax: MAIL FROM:<address>")
		return
	}
	from, params, err := parsePath(rest)
	switch {
	case errors.Is(err, errBadMailbox):
		s.fail("501 5.1.7 Bad sender address syntax")
		return
	case err != nil:
		s.fail("501 5.5.4 Syntax: MAIL FROM:<address>")
		return
	}
	var size, body string
	for _, p := range params {
		key, value, ok := parseParam(p)
		if !ok {
			s.fail("501 5.5.4 Syntax: bad MAIL parameter " + p)
			return
		}
		switch {
		case key == "SIZE" && size == "":
			n, err := strconv.ParseUint(value, 10, 63)
			if err != nil {
				s.fail("501 5.5.4 Syntax: SIZE=bytes")
				return
			}
			if int64(n) > s.cfg.maxSize {
				s.fail("552 5.3.4 Message size exceeds fixed maximum message size")
				return
			}
			size = strconv.FormatUint(n, 10)
		case key == "BODY" && body == "":
			body = strings.ToUpper(value)
			if body != "7BIT" && body != "8BITMIME" {
				s.fail("501 5.5.4 Syntax: BODY=7BIT or BODY=8BITMIME")
				return
			}
		case key == "SIZE" || key == "BODY":
			s.fail("501 5.5.4 Syntax: " + key + " given twice")
			return
		default:
			s.fail("555 5.5.4 MAIL FROM parameter " + key + " not recognized or not implemented")
			return
		}
	}
	s.State[keyFrom] = "<" + from + ">"
	delete(s.State, keyRcpt)
	setOrDelete(s.State, keySize, size)
	setOrDelete(s.State, keyBody, body)
	s.Reply("250 2.1.0 Ok")
}

func (s *session) rcpt(arg string) {
	if s.State[keyFrom] == "" {
		s.fail("503 5.5.1 Error: need MAIL command")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		s.fail("501 5.5.4 Syntax: RCPT TO:<address>")
		return
	}
	to, params, err := parsePath(rest)
	switch {
	case errors.Is(err, errBadMailbox) || (err == nil && to == ""):
		s.fail("501 5.1.3 Bad recipient address syntax")
		return
	case err != nil:
		s.fail("501 5.5.4 Syntax: RCPT TO:<address>")
		return
	case len(params) > 0:
		s.fail("555 5.5.4 RCPT TO parameters not recognized or not implemented")
		return
	}
	rs := s.recipients()
	if slices.Contains(rs, to) {
		s.Reply("250 2.1.5 Ok")
		return
	}
	if len(rs) >= s.cfg.maxRecipients {
		// Not counted as an error: RFC 5321 section 4.5.3.1.10 has the
		// client send the rest in another transaction.
		s.Reply("452 4.5.3 Error: too many recipients")
		return
	}
	b, _ := json.Marshal(append(rs, to)) // strings always marshal
	s.State[keyRcpt] = string(b)
	s.Reply("250 2.1.5 Ok")
}

func (s *session) data(arg string) {
	switch {
	case arg != "":
		s.fail("501 5.5.4 Syntax: DATA")
		return
	case s.State[keyFrom] == "":
		s.fail("503 5.5.1 Error: need MAIL command")
		return
	case len(s.recipients()) == 0:
		s.fail("503 5.5.1 Error: need RCPT command")
		return
	}
	s.State[keyData] = "1"
	s.Reply("354 End data with <CR><LF>.<CR><LF>")
	s.Collect(sdk.Collect{Terminator: ".", DotUnstuff: true, MaxBytes: s.cfg.maxSize})
}

// cutPrefixFold is strings.CutPrefix ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// setOrDelete sets state[key] to v, or deletes it when v is empty.
func setOrDelete(state map[string]string, key, v string) {
	if v == "" {
		delete(state, key)
		return
	}
	state[key] = v
}
