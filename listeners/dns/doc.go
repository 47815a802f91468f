// Package dns is switchyard's DNS front end: one address served on UDP and
// TCP by two miekg/dns servers that share a handler. Each query goes to a
// Dispatcher in wire format with the client's address and transport; the
// answer that comes back is checked (its id and question must match the
// query's), truncated for UDP clients to their EDNS0 buffer size (or 512
// bytes) with TC set so they retry over TCP, and written. A failure of the
// handler behind the Dispatcher is answered with SERVFAIL. Garbage whose
// header can be read is answered FORMERR by miekg/dns; the rest is dropped.
// Config bounds what clients can hold: queries answered at once (more get
// SERVFAIL at once), TCP connections open at once (more are closed at once
// and counted as refused) and a TCP connection's time without a query.
//
// miekg/dns v1 is in maintenance; this package is the thin adapter that
// keeps it away from the rest of switchyard. The sockets are the caller's:
// a swap of the plugin behind the Dispatcher never touches them.
package dns
