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
// Malformed input gets "Status: 400 Bad Request" or a closed connection and
// one log line, never a hung goroutine. Shutdown waits for every accepted
// connection's exchange: in SCGI an accepted connection always carries a
// request in flight.
package scgi
