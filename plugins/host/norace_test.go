//go:build !race

package host

// raceEnabled says the test binary runs with the race detector, so the
// plugins it builds should too.
const raceEnabled = false
