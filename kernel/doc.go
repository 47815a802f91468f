// Package kernel is switchyard's kernel: it owns the listening sockets and
// runs the plugin slots that answer them.
//
// A Kernel is created with New (which loads the configuration) and runs with
// Run until its context ends or Shutdown is called. Inside it:
//
//   - the socket table binds each listener's address once and reference-counts
//     it, so a configuration reload that keeps an address never closes its
//     socket, and a listener's front end can be replaced on a live socket;
//   - a slot per [plugins.NAME] entry holds the current plugin process and
//     any draining ones, and runs the swap state machine: snapshot the
//     executable, start it, Describe, Configure, switch new calls to it, drain
//     the old one; any failure keeps the old one serving;
//   - the watcher follows each executable's directory with fsnotify and tells
//     a slot when its file has settled into a new complete executable;
//   - a route connects each listener to its slot; calls wait briefly for a
//     slot that is restarting a crashed plugin;
//   - the admin socket (package kernel/admin) answers `switchyard ctl`.
//   - with [metrics] address set, an HTTP server answers Prometheus at
//     /metrics from a registry of the kernel's own (metrics.go), reading the
//     counters `ctl` shows when scraped.
//
// Concurrency: a slot serialises swaps, restarts and stopping with its swapMu;
// the hot path (route → slot.acquire → host.Client) takes only short locks
// and a lock-free in-flight counter. Every goroutine the kernel starts is
// owned by a slot, a listener or Run, and Run returns only after all of them
// have exited and every plugin process is gone.
package kernel
