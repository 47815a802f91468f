// Package sdk is what a switchyard plugin author imports.
//
// A plugin is an ordinary Go program whose main calls Serve with the handlers
// it implements:
//
//	func main() {
//		sdk.Serve(sdk.Plugin{
//			Name:    "hello",
//			Version: version,
//			HTTP:    http.HandlerFunc(hello),
//		})
//	}
//
// The kernel runs the program as a subprocess (hashicorp/go-plugin over gRPC),
// holds the listening sockets and connections itself, and hands the plugin
// each request. The SDK rebuilds an *http.Request with the method, URI,
// headers, body, remote address and the caller's deadline, and sends back
// what the handler writes to its http.ResponseWriter: status, headers,
// trailers and a streamed body (http.Flusher works). As with net/http, the
// body of an answer to HEAD is counted, not sent, a Write beyond a declared
// Content-Length fails with http.ErrContentLength, and a Write after the
// caller went away fails. Response bodies flow under the kernel's credit, so
// a slow client slows the handler's Writes instead of filling memory. A
// handler that panics answers 500, or has its response cut off if the head
// was already sent; panicking with http.ErrAbortHandler cuts the client off
// without logging (the kernel answers 502 when nothing was sent yet). The
// process keeps serving.
//
// When the plugin's executable changes on disk the kernel starts the new
// version, switches traffic to it and lets this one finish what it has in
// flight; a plugin needs no code for that.
//
// Configure receives the slot's settings from the kernel's configuration and
// a Host, through which the plugin logs into the kernel's log. Handlers reach
// the same Host with HostFrom(r.Context()).
//
// Package sdktest runs a Plugin in memory, through the same code paths, for
// tests.
package sdk
