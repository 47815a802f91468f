// Package proto holds the wire contract between the switchyard kernel and its
// handler plugins: switchyard.proto and the Go code generated from it by
// scripts/gen-proto. Plugin authors use package sdk, not this one.
package proto
