// Package config decodes, checks and prints the kernel's TOML configuration.
//
// Parse decodes a document strictly: a key the configuration does not define,
// a value of the wrong type or a malformed duration is an error that names
// the source and the line and column where it occurs, for example
//
//	config.toml:7:1: unknown key "plugins.hello.pth"
//
// Problems are reported together, one per line, not just the first: first
// those in the document's shape (syntax, unknown keys, wrong types), then,
// once the shape is right, those that validation finds. Validation follows
// decoding: Parse applies the defaults, so every field the kernel reads is
// set, resolves relative paths against the base directory (the config file's
// directory for Load, the executable's directory for Default) and checks
// names, protocols, addresses, references from listeners and timers to
// plugins, and that durations and sizes are positive, naming the item at
// fault:
//
//	config.toml:14:1: listener "web": plugin "helo" is not defined
//
// A Config returned without error is complete and consistent; the kernel
// never needs to check or default a field again. Protocols that this build
// does not serve yet are rejected (see supportedProtocols in validate.go).
// docs/config.md documents every key; a test keeps it in step with Config.
//
// Default returns the configuration embedded in the binary (default.toml in
// this package), which serves the bundled plugins on loopback so that
// `switchyard serve` works right after a build. Marshal renders an effective
// configuration back as TOML for `serve -print-config`; its output parses to
// an equal Config.
//
// A Config is a plain value: the package keeps no state, and a Config may be
// read from several goroutines once Parse has returned it.
package config
