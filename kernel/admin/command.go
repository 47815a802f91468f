package admin

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLine is the longest command line, without its newline, that Parse and
// the server accept.
const MaxLine = 1 << 20

// Command is one parsed admin command.
type Command struct {
	Name string   // "status", "reload", "state get", ... (subcommands joined with one space)
	Args []string // nil when the command has no arguments
}

// String returns the command as a line again (without a newline). For every
// Command that Parse returned, Parse(c.String()) returns an equal Command.
func (c Command) String() string {
	if len(c.Args) == 0 {
		return c.Name
	}
	return c.Name + " " + strings.Join(c.Args, " ")
}

// Mutating reports whether the command changes the kernel or its store:
// reload, reload-config, shutdown, upgrade, state put, state del, log-level.
// Mutating commands are audit-logged by the server.
func (c Command) Mutating() bool {
	s, ok := lookup(c.Name)
	return ok && s.mutating
}

// spec describes one command: its name, its arguments and whether it changes
// anything.
type spec struct {
	name     string
	args     []string // argument names as the usage shows them
	optional bool     // the last argument may be left out
	mutating bool
}

func (s spec) usage() string {
	var b strings.Builder
	b.WriteString(s.name)
	for i, a := range s.args {
		if s.optional && i == len(s.args)-1 {
			fmt.Fprintf(&b, " [%s]", a)
		} else {
			fmt.Fprintf(&b, " %s", a)
		}
	}
	return b.String()
}

// commands lists every command in the order the unknown-command error shows
// them. It is read-only.
var commands = []spec{
	{name: "status"},
	{name: "plugins"},
	{name: "listeners"},
	{name: "conns", args: []string{"LISTENER"}, optional: true},
	{name: "timers"},
	{name: "reload", args: []string{"PLUGIN"}, mutating: true},
	{name: "reload-config", mutating: true},
	{name: "state get", args: []string{"KEY"}},
	{name: "state put", args: []string{"KEY", "VALUE"}, mutating: true},
	{name: "state del", args: []string{"KEY"}, mutating: true},
	{name: "state list", args: []string{"PREFIX"}, optional: true},
	{name: "shutdown", mutating: true},
	{name: "upgrade", mutating: true},
	{name: "log-level", args: []string{"LEVEL"}, mutating: true},
}

// group is the word that prefixes subcommands ("state get").
const group = "state"

func lookup(name string) (spec, bool) {
	for _, s := range commands {
		if s.name == name {
			return s, true
		}
	}
	return spec{}, false
}

func knownNames() string {
	names := make([]string, len(commands))
	for i, s := range commands {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

func groupUsage() string {
	var us []string
	for _, s := range commands {
		if strings.HasPrefix(s.name, group+" ") {
			us = append(us, s.usage())
		}
	}
	return "usage: " + strings.Join(us, " | ")
}

// isSep reports whether b separates words.
func isSep(b byte) bool { return b == ' ' || b == '\t' }

// nextWord splits s, which starts with no separator, into its first word and
// the rest after the run of separators that follows it.
func nextWord(s string) (word, rest string) {
	i := 0
	for i < len(s) && !isSep(s[i]) {
		i++
	}
	word = s[:i]
	for i < len(s) && isSep(s[i]) {
		i++
	}
	return word, s[i:]
}

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// Parse reads one command line (without its newline):
//
//	status | plugins | listeners | conns [LISTENER] | timers | reload PLUGIN | reload-config
//	state get KEY | state put KEY VALUE | state del KEY | state list [PREFIX]
//	shutdown | upgrade | log-level LEVEL
//
// Words are separated by runs of spaces and tabs; spaces, tabs and carriage
// returns at either end of the line are dropped. The last argument of a
// command takes the rest of the line with its inner spacing kept, so VALUE
// (and KEY in "state get KEY") may contain spaces. Command names are
// case-sensitive. An empty line, a line containing a newline, a line longer
// than MaxLine, an unknown command and a wrong number of arguments are
// errors; the last two name the known commands or the usage.
func Parse(line string) (Command, error) {
	if len(line) > MaxLine {
		return Command{}, fmt.Errorf("command line is %d bytes, longer than the %d allowed", len(line), MaxLine)
	}
	if strings.IndexByte(line, '\n') >= 0 {
		return Command{}, errors.New("command line contains a newline")
	}
	rest := strings.Trim(line, " \t\r")
	if rest == "" {
		return Command{}, errors.New("empty command; known commands: " + knownNames())
	}
	name, rest := nextWord(rest)
	if name == group {
		var sub string
		sub, rest = nextWord(rest)
		if sub == "" {
			return Command{}, errors.New(groupUsage())
		}
		name += " " + sub
	}
	s, ok := lookup(name)
	if !ok {
		return Command{}, fmt.Errorf("unknown command %s; known commands: %s", quoteShort(name), knownNames())
	}
	if len(s.args) == 0 {
		if rest != "" {
			return Command{}, errors.New("usage: " + s.usage())
		}
		return Command{Name: name}, nil
	}
	var args []string
	for i := range s.args {
		last := i == len(s.args)-1
		if rest == "" {
			if last && s.optional {
				break
			}
			return Command{}, errors.New("usage: " + s.usage())
		}
		if last {
			args = append(args, rest)
			rest = ""
			break
		}
		var w string
		w, rest = nextWord(rest)
		args = append(args, w)
	}
	return Command{Name: name, Args: args}, nil
}
