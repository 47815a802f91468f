package main

import (
	"errors"
	"net/netip"
	"strings"
)

// Errors of parsePath.
var (
	// errPathSyntax: the argument is not a path in angle brackets followed
	// by parameters (answered 501 5.5.4).
	errPathSyntax = errors.New("smtp: expected <address>")
	// errBadMailbox: the path is in brackets, but what it holds is not a
	// mailbox (answered 501 5.1.7 for a sender, 5.1.3 for a recipient).
	errBadMailbox = errors.New("smtp: bad address syntax")
)

// Limits of RFC 5321 section 4.5.3.1.
const (
	maxLocalPart = 64
	maxDomain    = 255
	maxPath      = 256 // with the angle brackets
)

// parsePath parses the argument of MAIL after "FROM:" or of RCPT after
// "TO:": optional spaces (which RFC 5321 does not allow but clients send),
// a path in angle brackets, then parameters separated by spaces. It
// returns the mailbox, "" for the null path "<>", and the parameters. A
// source route ("<@relay:user@example.org>") is accepted and ignored, as
// RFC 5321 section 4.1.2 asks. The mailbox "postmaster" without a domain is
// accepted (section 4.5.1); the caller decides where the null path and
// postmaster may appear.
func parsePath(s string) (mailbox string, params []string, err error) {
	s = strings.TrimLeft(s, " ")
	if !strings.HasPrefix(s, "<") {
		return "", nil, errPathSyntax
	}
	end := closingBracket(s)
	if end < 0 {
		return "", nil, errPathSyntax
	}
	inner, rest := s[1:end], s[end+1:]
	if rest != "" && rest[0] != ' ' {
		return "", nil, errPathSyntax
	}
	params = strings.Fields(rest)
	if inner == "" {
		return "", params, nil
	}
	if end+1 > maxPath {
		return "", nil, errBadMailbox
	}
	if inner[0] == '@' {
		route, mbox, ok := strings.Cut(inner, ":")
		if !ok || !validRoute(route) {
			return "", nil, errBadMailbox
		}
		inner = mbox
	}
	if !validMailbox(inner) && !strings.EqualFold(inner, "postmaster") {
		return "", nil, errBadMailbox
	}
	return inner, params, nil
}

// closingBracket returns the index of the '>' that closes the path s
// begins, skipping quoted strings, or -1.
func closingBracket(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '>':
			return i
		}
	}
	return -1
}

// validRoute reports whether r is an RFC 5321 A-d-l: "@domain,@domain".
func validRoute(r string) bool {
	for d := range strings.SplitSeq(r, ",") {
		if !strings.HasPrefix(d, "@") || !validDomain(d[1:]) {
			return false
		}
	}
	return true
}

// validMailbox reports whether m is an RFC 5321 Mailbox: a local part
// (dot-string or quoted string) of at most 64 octets, "@", and a domain or
// address literal.
func validMailbox(m string) bool {
	var local, domain string
	if strings.HasPrefix(m, `"`) {
		end := closingQuote(m)
		if end < 0 || end+1 >= len(m) || m[end+1] != '@' {
			return false
		}
		local, domain = m[:end+1], m[end+2:]
		if !validQuoted(local) {
			return false
		}
	} else {
		var ok bool
		if local, domain, ok = strings.Cut(m, "@"); !ok || !validDotString(local) {
			return false
		}
	}
	return len(local) <= maxLocalPart && validDomain(domain)
}

// closingQuote returns the index of the '"' that closes the quoted string
// s begins, or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// validQuoted reports whether q is an RFC 5321 Quoted-string.
func validQuoted(q string) bool {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return false
	}
	for i := 1; i < len(q)-1; i++ {
		c := q[i]
		switch {
		case c == '\\':
			i++
			if i >= len(q)-1 || q[i] < 32 || q[i] > 126 {
				return false
			}
		case c == '"' || c < 32 || c > 126:
			return false
		}
	}
	return true
}

// validDotString reports whether s is an RFC 5321 Dot-string: atoms of
// atext separated by single dots.
func validDotString(s string) bool {
	if s == "" {
		return false
	}
	for atom := range strings.SplitSeq(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return false
			}
		}
	}
	return true
}

// isAtext reports whether c is RFC 5322 atext (ASCII only: smtp does not
// offer SMTPUTF8).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain reports whether d is a domain name (labels of letters,
// digits, '-' and, leniently, '_') or an address literal ("[192.0.2.1]",
// "[IPv6:2001:db8::1]", or a general "[tag:content]").
func validDomain(d string) bool {
	if d == "" || len(d) > maxDomain {
		return false
	}
	if d[0] == '[' {
		return validAddressLiteral(d)
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			switch c := label[i]; {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}

// validAddressLiteral reports whether d is an RFC 5321 address literal.
func validAddressLiteral(d string) bool {
	if len(d) < 3 || d[0] != '[' || d[len(d)-1] != ']' {
		return false
	}
	lit := d[1 : len(d)-1]
	if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	tag, content, general := strings.Cut(lit, ":")
	if !general {
		a, err := netip.ParseAddr(lit)
		return err == nil && a.Is4()
	}
	if tag == "" || content == "" || tag[len(tag)-1] == '-' {
		return false
	}
	for i := 0; i < len(tag); i++ {
		switch c := tag[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		default:
			return false
		}
	}
	for i := 0; i < len(content); i++ {
		if c := content[i]; c < 33 || c > 126 || c == '[' || c == ']' || c == '\\' {
			return false
		}
	}
	return true
}

// parseParam splits an ESMTP parameter "KEYWORD[=VALUE]" (RFC 5321
// section 4.1.2) and returns the keyword in upper case.
func parseParam(p string) (key, value string, ok bool) {
	key, value, hasValue := strings.Cut(p, "=")
	if key == "" || (hasValue && value == "") {
		return "", "", false
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' && i > 0:
		default:
			return "", "", false
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 33 || c > 126 || c == '=' {
			return "", "", false
		}
	}
	return strings.ToUpper(key), value, true
}
