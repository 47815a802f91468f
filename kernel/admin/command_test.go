package admin

import (
	"reflect"
	"strings"
	"testing"
)

var parseTests = []struct {
	name    string
	line    string
	want    Command
	wantErr string // substring of the error; "" means success
}{
	{name: "status", line: "status", want: Command{Name: "status"}},
	{name: "plugins", line: "plugins", want: Command{Name: "plugins"}},
	{name: "listeners", line: "listeners", want: Command{Name: "listeners"}},
	{name: "conns", line: "conns", want: Command{Name: "conns"}},
	{name: "conns listener", line: "conns mail", want: Command{Name: "conns", Args: []string{"mail"}}},
	{name: "reload", line: "reload hello", want: Command{Name: "reload", Args: []string{"hello"}}},
	{name: "reload-config", line: "reload-config", want: Command{Name: "reload-config"}},
	{name: "state get", line: "state get hello/count", want: Command{Name: "state get", Args: []string{"hello/count"}}},
	{name: "state put", line: "state put shared/motd hi", want: Command{Name: "state put", Args: []string{"shared/motd", "hi"}}},
	{name: "state del", line: "state del shared/motd", want: Command{Name: "state del", Args: []string{"shared/motd"}}},
	{name: "state list", line: "state list", want: Command{Name: "state list"}},
	{name: "state list prefix", line: "state list inbox/", want: Command{Name: "state list", Args: []string{"inbox/"}}},
	{name: "shutdown", line: "shutdown", want: Command{Name: "shutdown"}},
	{name: "upgrade", line: "upgrade", want: Command{Name: "upgrade"}},
	{name: "log-level", line: "log-level debug", want: Command{Name: "log-level", Args: []string{"debug"}}},

	{name: "value keeps inner spaces", line: "state put shared/motd hello   big  world", want: Command{Name: "state put", Args: []string{"shared/motd", "hello   big  world"}}},
	{name: "value keeps inner tabs", line: "state put k a\tb \t c", want: Command{Name: "state put", Args: []string{"k", "a\tb \t c"}}},
	{name: "runs of separators between words", line: "state \t put\t\tk   v", want: Command{Name: "state put", Args: []string{"k", "v"}}},
	{name: "leading and trailing spaces trimmed", line: "  \t reload hello \t ", want: Command{Name: "reload", Args: []string{"hello"}}},
	{name: "trailing spaces after value trimmed", line: "state put k two words   ", want: Command{Name: "state put", Args: []string{"k", "two words"}}},
	{name: "carriage return trimmed", line: "status\r", want: Command{Name: "status"}},
	{name: "last arg takes rest of line", line: "state get my key", want: Command{Name: "state get", Args: []string{"my key"}}},
	{name: "optional arg takes rest of line", line: "state list a b", want: Command{Name: "state list", Args: []string{"a b"}}},
	{name: "unicode value", line: "state put k héllo wörld ✓", want: Command{Name: "state put", Args: []string{"k", "héllo wörld ✓"}}},

	{name: "empty", line: "", wantErr: "empty command"},
	{name: "blank", line: " \t ", wantErr: "empty command"},
	{name: "unknown", line: "frobnicate now", wantErr: `unknown command "frobnicate"; known commands: status, plugins`},
	{name: "case sensitive", line: "STATUS", wantErr: "unknown command"},
	{name: "unknown state subcommand", line: "state frob k", wantErr: `unknown command "state frob"`},
	{name: "state alone", line: "state", wantErr: "usage: state get KEY | state put KEY VALUE | state del KEY | state list [PREFIX]"},
	{name: "status extra", line: "status now", wantErr: "usage: status"},
	{name: "reload without plugin", line: "reload", wantErr: "usage: reload PLUGIN"},
	{name: "reload only spaces", line: "reload   ", wantErr: "usage: reload PLUGIN"},
	{name: "state get without key", line: "state get", wantErr: "usage: state get KEY"},
	{name: "state put without value", line: "state put k", wantErr: "usage: state put KEY VALUE"},
	{name: "state put without key", line: "state put", wantErr: "usage: state put KEY VALUE"},
	{name: "state del without key", line: "state del", wantErr: "usage: state del KEY"},
	{name: "log-level without level", line: "log-level", wantErr: "usage: log-level LEVEL"},
	{name: "shutdown extra", line: "shutdown now", wantErr: "usage: shutdown"},
	{name: "embedded newline", line: "status\nshutdown", wantErr: "newline"},
	{name: "too long", line: "state put k " + strings.Repeat("x", MaxLine), wantErr: "longer than"},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.line)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %#v, want error containing %q", tt.line, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %q, want it to contain %q", tt.line, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.line, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %#v, want %#v", tt.line, got, tt.want)
			}
			again, err := Parse(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("Parse(%q) = %#v, %v; want %#v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseMaxLine(t *testing.T) {
	prefix := "state put k "
	line := prefix + strings.Repeat("v", MaxLine-len(prefix))
	if _, err := Parse(line); err != nil {
		t.Fatalf("line of exactly MaxLine bytes: %v", err)
	}
	if _, err := Parse(line + "v"); err == nil {
		t.Fatal("line of MaxLine+1 bytes accepted")
	}
}

func TestCommandString(t *testing.T) {
	for _, tt := range []struct {
		cmd  Command
		want string
	}{
		{Command{Name: "status"}, "status"},
		{Command{Name: "state put", Args: []string{"k", "a  b"}}, "state put k a  b"},
		{Command{}, ""},
	} {
		if got := tt.cmd.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.cmd, got, tt.want)
		}
	}
}

func TestMutating(t *testing.T) {
	mutating := map[string]bool{
		"reload": true, "reload-config": true, "shutdown": true, "upgrade": true,
		"state put": true, "state del": true, "log-level": true,
	}
	for _, s := range commands {
		if got := (Command{Name: s.name}).Mutating(); got != mutating[s.name] {
			t.Errorf("Command{%q}.Mutating() = %v, want %v", s.name, got, mutating[s.name])
		}
	}
	if (Command{Name: "nonsense"}).Mutating() {
		t.Error("unknown command reported as mutating")
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		if len(tt.line) < 4096 {
			f.Add(tt.line)
		}
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := Parse(line)
		if err != nil {
			if cmd.Name != "" || cmd.Args != nil {
				t.Fatalf("Parse(%q) returned %#v with error %v", line, cmd, err)
			}
			return
		}
		s := cmd.String()
		if strings.ContainsAny(s, "\n") {
			t.Fatalf("Parse(%q).String() = %q contains a newline", line, s)
		}
		again, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) = %#v, but Parse(%q): %v", line, cmd, s, err)
		}
		if !reflect.DeepEqual(again, cmd) {
			t.Fatalf("Parse(%q) = %#v, but Parse(%q) = %#v", line, cmd, s, again)
		}
	})
}
