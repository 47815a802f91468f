package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/kernel/admin"
	"github.com/switchyard-dev/switchyard/kernel/config"
)

// NewLogger returns the kernel's logger: log/slog text or JSON records on w,
// at the level held by level.
func NewLogger(w io.Writer, format string, level *slog.LevelVar) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format must be text or json, not %q", format)
	}
}

// ParseLevel reads a log level name (debug, info, warn, error).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// CtlOptions configure Ctl.
type CtlOptions struct {
	// Socket is the -socket flag.
	Socket string
	// ConfigPath, when set, is a configuration whose admin.socket names the
	// socket (after -socket and $SWITCHYARD_SOCKET).
	ConfigPath string
	// JSON prints the raw reply line instead of a table.
	JSON bool
	// Timeout bounds the exchange.
	Timeout time.Duration
	Getenv  func(string) string
}

// CtlSocket resolves the admin socket for ctl: -socket, $SWITCHYARD_SOCKET,
// admin.socket of the -config file, then the default.
func CtlSocket(o CtlOptions) (string, error) {
	path, _, err := ctlSocket(o)
	return path, err
}

// ctlSocket is CtlSocket, also returning the command that starts a kernel
// answering there, for the error that says none does.
func ctlSocket(o CtlOptions) (path, start string, err error) {
	if o.Socket != "" {
		return o.Socket, "switchyard serve -socket " + shellQuote(o.Socket), nil
	}
	if s := o.Getenv("SWITCHYARD_SOCKET"); s != "" {
		return s, "switchyard serve", nil // which reads $SWITCHYARD_SOCKET too
	}
	start = "switchyard serve"
	if o.ConfigPath != "" {
		cfg, err := config.Load(o.ConfigPath)
		if err != nil {
			return "", "", err
		}
		start += " -config " + shellQuote(o.ConfigPath)
		if cfg.Admin.Socket != "" {
			return cfg.Admin.Socket, start, nil
		}
	}
	return admin.DefaultSocket(o.Getenv), start, nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%=,", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// suggest makes an error that says no kernel answers suggest start.
func suggest(err error, start string) error {
	var nk *admin.NoKernelError
	if errors.As(err, &nk) {
		nk.Start = start
	}
	return err
}

// Ctl sends one admin command (args are its words) and prints the answer.
// It returns the process exit status: 0 when the kernel answered ok, 1 when
// it answered with an error or could not be reached, 2 for a usage error.
func Ctl(ctx context.Context, o CtlOptions, args []string, stdout, stderr io.Writer) int {
	if o.Getenv == nil {
		return 2
	}
	line := strings.Join(args, " ")
	cmd, err := admin.Parse(line)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard ctl: %v\n", err)
		return 2
	}
	path, start, err := ctlSocket(o)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard ctl: %v\n", err)
		return 1
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	c, err := admin.Dial(ctx, path)
	if err != nil {
		fmt.Fprintf(stderr, "switchyard ctl: %v\n", suggest(err, start))
		return 1
	}
	defer c.Close()
	r, err := c.Do(ctx, cmd.String())
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v: %w", o.Timeout, err)
		}
		fmt.Fprintf(stderr, "switchyard ctl: %v\n", err)
		return 1
	}
	if o.JSON {
		b, err := json.Marshal(r)
		if err != nil {
			fmt.Fprintf(stderr, "switchyard ctl: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
		if !r.OK {
			return 1
		}
		return 0
	}
	if !r.OK {
		fmt.Fprintf(stderr, "switchyard ctl: %s: %s\n", cmd.Name, r.Error)
		return 1
	}
	if err := admin.Render(stdout, cmd, r.Data); err != nil {
		fmt.Fprintf(stderr, "switchyard ctl: %v\n", err)
		return 1
	}
	return 0
}
