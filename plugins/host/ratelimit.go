package host

import (
	"log/slog"

	"github.com/switchyard-dev/switchyard/internal/loglimit"
)

// A plugin that floods its log (a loop printing, a handler logging every
// byte) must not flood the kernel's: every record a plugin process sends —
// from stderr, stdout, go-plugin's logger or Host.Log — passes one token
// bucket per process (internal/loglimit).
const (
	logRate  = 1000 // records per second, sustained
	logBurst = 5000 // records at once
)

func newLimitedLogger(log *slog.Logger) *slog.Logger {
	return loglimit.Logger(log, loglimit.New(logRate, logBurst), "plugin log over its rate limit: records dropped")
}
