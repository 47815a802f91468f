// Command switchyard is the switchyard kernel and its control client.
//
//	switchyard serve [-config FILE] [-data DIR] [-socket PATH] [-log-format text|json] [-log-level LEVEL] [-print-config]
//	switchyard ctl [-socket PATH] [-config FILE] [-json] [-timeout D] COMMAND [ARGS...]
//	switchyard ctl [-socket PATH] [-config FILE] [-json] watch [-interval D] [-n COUNT] [-json]
//	switchyard plugin new [-dir DIR] [-module PATH] [-switchyard CHECKOUT] NAME PROTOCOL[,PROTOCOL...]
//	switchyard version
//
// This file holds flags only; the logic lives in package kernel.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/internal/gctune"
	"github.com/switchyard-dev/switchyard/kernel"
	"github.com/switchyard-dev/switchyard/kernel/admin"
)

// kernelHeapFloor is the most heap the GC tuner lets the kernel grow to
// between collections under load (internal/gctune).
const kernelHeapFloor = 64 << 20

// version is set at build time with -ldflags "-X main.version=V".
var version = ""

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(os.Args[2:]))
	case "ctl":
		os.Exit(ctl(os.Args[2:]))
	case "plugin":
		os.Exit(plugin(os.Args[2:], os.Stdout, os.Stderr))
	case "version", "-version", "--version":
		fmt.Println("switchyard", fullVersion())
	case "help", "-h", "-help", "--help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "switchyard: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  switchyard serve [-config FILE] [-data DIR] [-socket PATH] [-log-format text|json] [-log-level LEVEL] [-print-config]
  switchyard ctl [-socket PATH] [-config FILE] [-json] [-timeout D] COMMAND [ARGS...]
  switchyard plugin new [-dir DIR] [-module PATH] [-switchyard CHECKOUT] NAME PROTOCOL[,PROTOCOL...]
  switchyard version

ctl commands: status, plugins, listeners, conns [LISTENER], timers,
reload PLUGIN, reload-config, state get|put|del|list, log-level LEVEL,
shutdown, upgrade, and watch [-interval D] [-n COUNT] [-json]: the status,
listeners and plugins with their rates, refreshed like top
`)
}

// fullVersion is the -X version, or the module version and VCS revision.
func fullVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	if v == "" || v == "(devel)" {
		return "dev"
	}
	return v
}

func serve(args []string) int {
	// Before anything else, so that a SIGTERM during start-up is a clean
	// shutdown.
	signals := kernel.CatchSignals()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration `file` (default: the embedded default)")
	data := fs.String("data", "", "state `dir`ectory (overrides state.dir)")
	socket := fs.String("socket", "", "admin socket `path`")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	printConfig := fs.Bool("print-config", false, "print the effective configuration and exit")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this `address` (e.g. 127.0.0.1:6060)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "switchyard serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	// The kernel's live heap is small and it allocates per request: the
	// tuner spares it most GC cycles under load (internal/gctune). GOGC in
	// the environment turns it off.
	defer gctune.Start(kernelHeapFloor)()
	opts := kernel.Options{
		ConfigPath:    *configPath,
		DataDir:       *data,
		Socket:        *socket,
		Version:       fullVersion(),
		HandleSignals: true,
		Signals:       signals,
		Pprof:         *pprofAddr,
	}
	if *printConfig {
		cfg, err := kernel.LoadConfig(opts)
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchyard serve: %v\n", err)
			return 1
		}
		b, err := cfg.Marshal()
		if err != nil {
			fmt.Fprintf(os.Stderr, "switchyard serve: %v\n", err)
			return 1
		}
		os.Stdout.Write(b)
		return 0
	}
	level := new(slog.LevelVar)
	l, err := kernel.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchyard serve: %v\n", err)
		return 2
	}
	level.Set(l)
	log, err := kernel.NewLogger(os.Stderr, *logFormat, level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchyard serve: %v\n", err)
		return 2
	}
	opts.Logger, opts.Level = log, level
	log.Info("switchyard starting", "version", opts.Version, "pid", os.Getpid())
	k, err := kernel.New(opts)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	if err := k.Run(context.Background()); err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	return 0
}

func ctl(args []string) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	socket := fs.String("socket", "", "admin socket `path`")
	configPath := fs.String("config", "", "read admin.socket from this configuration `file`")
	jsonOut := fs.Bool("json", false, "print the raw JSON reply")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		usage(os.Stderr)
		return 2
	}
	o := kernel.CtlOptions{
		Socket:     *socket,
		ConfigPath: *configPath,
		JSON:       *jsonOut,
		Timeout:    *timeout,
		Getenv:     os.Getenv,
	}
	if fs.Arg(0) == "watch" {
		return watch(o, fs.Args()[1:])
	}
	return kernel.Ctl(context.Background(), o, fs.Args(), os.Stdout, os.Stderr)
}

// watch runs `switchyard ctl watch`.
func watch(o kernel.CtlOptions, args []string) int {
	fs := flag.NewFlagSet("ctl watch", flag.ContinueOnError)
	interval := fs.Duration("interval", time.Second, "time between frames")
	count := fs.Int("n", 0, "stop after `count` frames (0: until interrupted)")
	jsonOut := fs.Bool("json", false, "print each frame as one line of JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "switchyard ctl watch: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *interval <= 0 || *count < 0 {
		fmt.Fprintln(os.Stderr, "switchyard ctl watch: -interval must be positive and -n not negative")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fi, err := os.Stdout.Stat()
	terminal := err == nil && fi.Mode()&os.ModeCharDevice != 0
	return kernel.CtlWatch(ctx, o, admin.WatchOptions{Interval: *interval, Count: *count, JSON: *jsonOut, Clear: terminal},
		os.Stdout, os.Stderr)
}
