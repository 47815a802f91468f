// Package http is switchyard's HTTP/1.1 listener front end.
//
// A [Server] wraps a net/http.Server around a listening socket the kernel owns
// and turns every request into one call on a [Dispatcher]; it knows nothing of
// plugins or processes. The kernel swaps what answers by calling
// [Server.SetDispatcher]: requests already dispatched finish where they started.
//
// The server speaks plain-text HTTP/1.1 only (keep-alive, chunked request
// bodies). HTTP/2 is off on every path: no TLS "h2" protocol, no prior-knowledge
// HTTP/2 ("PRI * HTTP/2.0" is answered 505), and an "Upgrade: h2c" offer is
// ignored as RFC 9110 §7.8 allows.
//
// The server enforces the request body limit itself (413 for a declared
// Content-Length over the limit, *net/http.MaxBytesError for a longer chunked
// body), closes at once a connection accepted while Config.MaxConnections
// are open (counted in Stats.Refused, with one warning a second at most),
// recovers a panicking Dispatcher (500, or a cut connection when the head
// was already sent), cuts the connection when a Dispatcher returns without
// an answer because the connection failed (never an empty 200), and keeps
// counters for the admin socket ([Server.Stats]).
package http
