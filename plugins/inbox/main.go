// Command inbox is switchyard's message gateway, the descendant of the
// habitat SCGI gateway: POST /message stores the body durably in the shared
// store and answers 201 with its id, GET /messages lists the stored
// messages, GET /message/ID returns one. Only the actions in its allowlist
// are callable; every other request answers 404. Serve it on an HTTP
// listener, or on an SCGI one behind nginx. See README.md.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version))
}
