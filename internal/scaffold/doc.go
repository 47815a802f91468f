// Package scaffold writes the folder of a new switchyard plugin: a main
// package that calls the SDK's Serve with a handler for each protocol asked
// for, tests that run it in memory with sdktest, and a README that says how
// to build it, point the kernel's configuration at it and swap it.
//
// Inside the switchyard module the new package builds as part of it. Outside
// it, the folder gets its own go.mod, which requires switchyard and, since
// switchyard is not published, replaces it with a source checkout; the
// go.mod lists switchyard's own requirements and the folder gets a copy of
// its go.sum, so the plugin builds at once, offline, with the versions the
// kernel was built with.
package scaffold
