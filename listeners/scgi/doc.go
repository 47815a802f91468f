// Package scgi is switchyard's SCGI front end: the protocol a front web
// server (nginx scgi_pass, Apache mod_proxy_scgi, lighttpd mod_scgi) uses to
// hand requests to an application over a UNIX or TCP socket.
//
// Each connection carries one request: a netstring of NUL-separated header
// pairs, CONTENT_LENGTH first and SCGI=1 among them, then CONTENT_LENGTH
// bytes of body. The Server turns it into the *http.Request an HTTP server
// would have built (method, URI, query, HTTP_* headers, CONTENT_TYPE, remote
// address, body) and gives it to a Dispatcher, the same small interface the
// HTTP front end uses; the answer goes back as CGI output (a Status line,
// header lines, a blank line, the body) and the connection is closed.
//
// The answer's end is the connection's end: no chunked encoding, no
// trailers, a Content-Length only when the handler sets one. An answer cut
// off after its head (a panic, or http.ErrAbortHandler) is ended with a TCP
// reset, which the front server reports as an upstream failure; over a UNIX
// socket only a Content-Length lets it notice. A request refused unread
// (413, 400, 503) or whose handler left its body unread is answered, then
// half-closed and drained for a moment, so that the front server reads the
// answer instead of a reset.
//
// Once the body has been read whole, the server watches the connection: the
// front server closing it (nginx does when its own client goes away)
// cancels the request's context. A front server must therefore not
// half-close the connection after sending a request; nginx does not.
//
// Malformed input gets "Status: 400 Bad Request" or a closed connection and
// one log line, never a hung goroutine. A connection accepted while
// Config.MaxConnections are open is closed at once, unanswered, and counted
// (Stats.Refused, with one warning a second at most). Shutdown waits for
// every accepted connection's exchange: in SCGI an accepted connection
// always carries a request in flight.
package scgi
