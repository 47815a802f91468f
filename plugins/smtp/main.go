// Command smtp is switchyard's SMTP receiver (the core of RFC 5321: EHLO,
// HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, VRFY, HELP, QUIT
// and a size limit) for a line listener. It stores each accepted message
// durably in the kernel's shared store before it answers 250, and keeps
// every bit of a session in the kernel's session state, so a dialogue
// carries on across a swap of the plugin, even in the middle of a
// transaction. See README.md.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version))
}
