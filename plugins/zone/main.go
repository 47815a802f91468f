// Command zone is switchyard's authoritative DNS plugin: it answers from the
// RFC 1035 zone file named in its setting `file`, and reloads the zone when
// the file changes, without a process swap. Build it with
//
//	go build -ldflags "-X main.version=v2" -o bin/plugins/zone ./plugins/zone
//
// See README.md for the settings and the answering rules.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version))
}
