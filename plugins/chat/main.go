// Command chat is switchyard's multi-user line chat for telnet clients:
// each line a client types goes to every other connection, /nick picks a
// name, /who lists who is online, and a timer announces how many are.
// Everything about a connection lives in the kernel's session state and
// membership comes from the kernel's list of live connections, so the chat
// carries on unchanged across swaps of the plugin. See README.md.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version))
}
