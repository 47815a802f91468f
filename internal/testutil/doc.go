// Package testutil holds the small helpers the project's tests share:
// goroutine- and file-descriptor-leak checks, polling for a condition, a
// buffer a logger and a test can share, a slog handler that records what is
// logged, short directories for UNIX sockets and a look at live processes.
//
// Only tests import it. Its helpers take a testing.TB and report through
// it; none keeps package-level state.
package testutil
