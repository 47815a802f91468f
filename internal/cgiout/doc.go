// Package cgiout parses the output of a CGI-style handler — header lines, a
// blank line, then the document — and applies the response rules of RFC 3875
// section 6: a Status field sets the code, a Location without a Status means
// 302 Found, a missing Content-Type means text/html, and output that breaks
// the rules (a malformed Status, a header line without a colon, no header
// fields at all, no blank line before the output ends) is an error the
// caller answers with 502, never an empty 200.
//
// The kernel applies it to every response a plugin marks as CGI output, on
// HTTP and SCGI listeners alike; the SDK applies the same rules when a CGI
// handler runs outside the kernel.
package cgiout
