package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/switchyard-dev/switchyard/kernel/admin"
)

// CtlWatch is `switchyard ctl watch`: it prints the kernel's status, with
// the listeners' and plugins' rates since the previous frame, every
// w.Interval (see admin.Watch), the exchange bounded by o.Timeout. It
// returns the exit status: 0 when ctx ends (SIGINT, SIGTERM) or w.Count
// frames are printed, 1 when the kernel cannot be reached or goes away.
func CtlWatch(ctx context.Context, o CtlOptions, w admin.WatchOptions, stdout, stderr io.Writer) int {
	if o.Getenv == nil {
		return 2
	}
	path, start, err := ctlSocket(o)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard ctl watch: %v\n", err)
		return 1
	}
	w.JSON = w.JSON || o.JSON
	w.Timeout = o.Timeout
	if err := admin.Watch(ctx, path, w, stdout); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v: %w", o.Timeout, err)
		}
		fmt.Fprintf(stderr, "switchyard ctl watch: %v\n", suggest(err, start))
		return 1
	}
	return 0
}
