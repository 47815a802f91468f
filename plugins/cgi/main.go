// Command cgi is switchyard's CGI gateway: it runs the executable scripts in
// the directory of its setting dir, /NAME/extra/path running dir/NAME with
// the RFC 3875 meta-variables, and answers with what the script prints,
// under the CGI rules the kernel applies (Status sets the code, Location
// alone means 302, no Content-Type means text/html, malformed output is a
// 502). See README.md.
package main

import (
	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// version is set at build time with -ldflags "-X main.version=V".
var version = "dev"

func main() {
	sdk.Serve(newPlugin(version))
}
