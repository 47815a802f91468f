// Command probe is switchyard's diagnostic plugin for operators and tests.
// Every answer names its version and pid, so a client can tell which
// generation of the plugin served it. See README.md for its endpoints.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version, exit))
}
