// Package state is switchyard's durable state: the key/value store plugins
// share, and (with the line servers and kernel upgrades) the session table
// of live connections and its snapshot.
//
// Store is the contract the kernel uses, and Key maps a plugin's keys into
// its key space. Bolt implements Store in one bbolt file
// (<state.dir>/store.db): a Put or Delete that returned nil is committed
// and fsynced, so a write acknowledged to a client survives kill -9 of the
// kernel, and concurrent writes share one commit and fsync (group commit).
// bbolt locks the file, so one kernel at a time opens a store; kernels on
// several machines would share a distributed Store instead.
package state
