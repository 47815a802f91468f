//go:build race

package testbin

// Race is true when the test binary was built with the race detector, and
// binaries are then built with it too.
const Race = true
