// Command hello is switchyard's demo plugin: GET / answers
// "hello from VERSION (pid PID)". Build it with
//
//	go build -ldflags "-X main.version=v2" -o bin/plugins/hello ./plugins/hello
//
// and the kernel swaps it in while it serves.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version))
}
