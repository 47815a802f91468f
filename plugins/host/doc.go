// Package host is the kernel's side of a plugin: it launches plugin
// processes through hashicorp/go-plugin, serves them the Host service, and
// carries calls to them over multiplexed Calls streams.
//
// Process owns one running plugin executable: Start execs it (a fresh
// exec.Cmd, go-plugin Client and checksum per launch, from a locked OS thread
// with Pdeathsig so the process cannot outlive the kernel), and Kill stops
// it. Client speaks the plugin protocol over any gRPC connection, a process's
// or an in-memory one (package sdktest uses it that way). Neither knows about
// slots, swaps or configuration: that is the kernel's business.
package host
