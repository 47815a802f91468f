package sdk

import (
	"io"
	"net/http"

	"github.com/switchyard-dev/switchyard/internal/cgiout"
)

// CGI returns a handler that answers with CGI-style output, as a CGI script
// does: f writes header lines (Status:, Location:, Content-Type: and any
// other field), a blank line, then the body, to out. The kernel applies the
// rules of RFC 3875 section 6 on HTTP and SCGI listeners alike: a Status
// field sets the code ("Status: 404 Not Found"), a Location without a
// Status means 302 Found, a missing Content-Type means text/html, and output
// that breaks the rules (a malformed Status, no blank line, no header
// fields) is answered with 502 Bad Gateway rather than with an empty 200.
// Lines may end with LF or CRLF.
//
// f must not use r's ResponseWriter. Outside the kernel — a plugin run
// standalone, or the handler served by net/http in a test — the SDK applies
// the same rules itself.
func CGI(f func(out io.Writer, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rw := unwrapResponseWriter(w); rw != nil && rw.startCGI() {
			f(rw, r)
			return
		}
		cw := cgiout.NewWriter(w)
		f(cw, r)
		_ = cw.Close()
	})
}

// unwrapResponseWriter finds the SDK's writer under w's wrappers, as
// http.ResponseController does, or returns nil.
func unwrapResponseWriter(w http.ResponseWriter) *responseWriter {
	for {
		switch t := w.(type) {
		case *responseWriter:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}
