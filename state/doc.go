// Package state is switchyard's durable state: the key/value store plugins
// share, and (with the line servers and kernel upgrades) the session table
// of live connections and its snapshot.
//
// This build holds the store's contract and its key space; the bbolt-backed
// store arrives with the first plugin that writes (inbox).
package state
