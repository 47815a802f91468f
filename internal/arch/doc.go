// Package arch holds tests that keep the project's shape: every package
// says what it is for, and packages import only across the boundaries the
// design allows.
package arch
