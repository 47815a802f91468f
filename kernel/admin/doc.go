// Package admin is switchyard's operator interface: the UNIX admin socket the
// kernel listens on and the client `switchyard ctl` uses to talk to it.
//
// The protocol is line based. A client writes one command per line; words are
// separated by spaces or tabs and a command's last argument takes the rest of
// the line, so `state put KEY VALUE` may carry spaces in VALUE. The server
// answers every command, in order, with one line of JSON:
//
//	{"ok":true,"data":...}
//	{"ok":false,"error":"..."}
//
// Only the daemon's own uid and root may talk to the socket: [Listen] creates
// it with mode 0600 in a directory of mode 0700, and [Server] checks every
// peer's credentials (SO_PEERCRED) before reading from it.
//
// The package knows nothing of the kernel. The kernel plugs itself in as a
// [Handler]; [Parse] knows every command and its arity, so a Handler only
// sees well-formed commands. [Render] turns a reply into the tables `ctl`
// prints for humans.
//
// A typical daemon:
//
//	ln, err := admin.Listen(path)
//	if err != nil {
//		return err // admin.ErrInUse when another kernel answers there
//	}
//	srv := admin.NewServer(k, logger)
//	go srv.Serve(ctx, ln) // returns after ctx ends and every reply is written
//
// and a client:
//
//	c, err := admin.Dial(ctx, admin.DefaultSocket(os.Getenv))
//	...
//	reply, err := c.Do(ctx, "reload hello")
package admin
