// Package line is switchyard's front end for line protocols (SMTP, chat,
// anything a telnet client can speak): a TCP or UNIX stream listener whose
// connections are sessions. Each connection has a kernel-wide id and a
// State map that outlives the code answering it; its input is framed into
// lines (LF ends a line, a CR before it is dropped), optionally stripped of
// telnet negotiation and decoded as UTF-8, and turned into events — Open,
// Line, TooLong, Block, Close — that a Dispatcher answers one at a time, in
// order. Replies are written without blocking the reader; a client that
// reads too slowly is disconnected once its output exceeds a bound, and
// never holds up another connection.
//
// The package knows a Dispatcher, not plugin processes: a swap of the code
// behind the Dispatcher happens between two events and is invisible to the
// client. A session can also leave its server alive, for the kernel's own
// upgrade: Server.Detach stops every session between two events and
// returns each as a Handover (its state, the input read and not framed,
// the framer's state, the output not written, and a duplicate of its
// socket), which Server.Adopt, in this process or the next kernel's,
// serves on from the next byte.
package line
