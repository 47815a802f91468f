package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/switchyard-dev/switchyard/internal/scaffold"
)

const pluginUsage = `usage: switchyard plugin new [-dir DIR] [-module PATH] [-switchyard CHECKOUT] NAME PROTOCOL[,PROTOCOL...]

Writes DIR/NAME (default ./NAME): a plugin serving PROTOCOL (http, scgi, dns,
line or timer; several separated by commas), its tests and a README saying how
to build it, configure the kernel for it and swap it.

Inside the switchyard module the folder is one more package of it. Elsewhere
it gets its own go.mod, module PATH (default NAME), which replaces switchyard
(unpublished) with the source checkout CHECKOUT (default: the one holding the
current directory or this executable).
`

// plugin runs `switchyard plugin SUBCOMMAND`.
func plugin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "new" {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprint(stdout, pluginUsage)
			return 0
		}
		fmt.Fprint(stderr, pluginUsage)
		return 2
	}
	fs := flag.NewFlagSet("plugin new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), pluginUsage+"\n")
		fs.PrintDefaults()
	}
	dir := fs.String("dir", ".", "create the plugin's folder in this `dir`ectory")
	module := fs.String("module", "", "module `path` of the go.mod written outside the switchyard module (default NAME)")
	checkout := fs.String("switchyard", "", "switchyard source `checkout` the go.mod's replace points at, outside the module")
	// Flags may come before or after NAME and PROTOCOL.
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
			return 0
		} else if err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "switchyard plugin new: want NAME and PROTOCOL, got %d arguments\n\n", len(pos))
		fmt.Fprint(stderr, pluginUsage)
		return 2
	}
	name := pos[0]
	if err := scaffold.CheckName(name); err != nil {
		fmt.Fprintf(stderr, "switchyard plugin new: %v\n", err)
		return 2
	}
	protocols, err := scaffold.ParseProtocols(pos[1])
	if err != nil {
		fmt.Fprintf(stderr, "switchyard plugin new: %v\n", err)
		return 2
	}
	var search []string
	if wd, err := os.Getwd(); err == nil {
		search = append(search, wd)
	}
	if exe, err := os.Executable(); err == nil {
		search = append(search, filepath.Dir(exe))
	}
	res, err := scaffold.New(scaffold.Options{Name: name, Protocols: protocols, Dir: filepath.Join(*dir, name),
		Module: *module, Checkout: *checkout, Search: search})
	if err != nil {
		fmt.Fprintf(stderr, "switchyard plugin new: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s:", res.Dir)
	for _, f := range res.Files {
		fmt.Fprintf(stdout, " %s", f)
	}
	fmt.Fprintf(stdout, "\n\nbuild it (in %s):\n\n    %s\n\nand add to the kernel's configuration:\n\n%s\n\nREADME.md says how to swap it.\n",
		res.BuildDir, res.Build, res.Config)
	return 0
}
