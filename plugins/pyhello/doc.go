// Package pyhello holds the end-to-end tests of pyhello.py, a switchyard
// HTTP plugin written in Python: they run a kernel with the script as its
// plugin and drive it with real HTTP clients. The plugin itself is the
// script beside this file; see README.md.
package pyhello
