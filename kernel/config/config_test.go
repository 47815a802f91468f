package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// base is the directory relative paths resolve against in these tests.
const base = "/etc/switchyard"

// fullConfig uses every key this build accepts.
const fullConfig = `[admin]
socket = "run/admin.sock"

[metrics]
address = "[::1]:9464"

[state]
dir = "/var/lib/switchyard"

[plugins.hello]
path = "plugins/hello"
args = ["-v", "--greeting=hi there"]
env = { LANG = "C.UTF-8", HELLO_MODE = "loud" }
watch = false
drain_timeout = "45s"
call_timeout = "1m30s"
start_timeout = "2s"

[plugins.hello.settings]
greeting = "hello"
count = 3
ratio = 0.5
enabled = true
tags = ["a", "b"]
when = 1979-05-27T07:32:00-08:00
day = 1979-05-27
at = 07:32:00
local = 1979-05-27T07:32:00.5
empty = []
nested = { deep = { deeper = [1, 2.5, "x", { k = "v" }] } }

[[plugins.hello.settings.routes]]
path = "/a"

[[plugins.hello.settings.routes]]
path = "/b"

[plugins.probe]
path = "/opt/switchyard/plugins/probe"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:8080"
plugin = "hello"
max_body = 1048576
max_header_bytes = 65536
read_header_timeout = "5s"
read_timeout = "30s"
idle_timeout = "2m"

[[listeners]]
name = "local"
protocol = "http"
address = "unix:run/web.sock"
plugin = "probe"

[[listeners]]
name = "v6"
protocol = "http"
address = "[::1]:0"
plugin = "probe"

[[listeners]]
name = "any"
protocol = "http"
address = ":0"
plugin = "probe"
`

// hello is a minimal valid config that other cases build on.
const hello = `[plugins.hello]
path = "plugins/hello"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:8080"
plugin = "hello"
`

// A case is a document and either the lines its error must contain (each
// want entry is a substring of one line of the error) or, with want empty,
// success. lines, when set, is the exact number of lines of the error.
type parseCase struct {
	name  string
	doc   string
	want  []string
	lines int
}

var cases = []parseCase{
	{name: "full", doc: fullConfig},
	{name: "minimal", doc: hello},
	{name: "empty document", doc: ""},
	{name: "default", doc: string(defaultTOML)},

	// Unknown keys.
	{
		name: "unknown top-level key",
		doc:  "colour = \"blue\"\n" + hello,
		want: []string{`config.toml:1:1: unknown key "colour"`},
	},
	{
		name: "unknown top-level table",
		doc:  hello + "\n[tracing]\naddress = \"127.0.0.1:4317\"\n",
		want: []string{`config.toml:10:2: unknown table "tracing"`}, lines: 1,
	},
	{
		name: "unknown key in metrics",
		doc:  hello + "[metrics]\naddress = \"127.0.0.1:9464\"\npath = \"/m\"\n",
		want: []string{`config.toml:11:1: unknown key "metrics.path"`}, lines: 1,
	},

	// Metrics.
	{name: "metrics", doc: hello + "[metrics]\naddress = \"127.0.0.1:9464\"\n"},
	{name: "metrics on any free port", doc: hello + "[metrics]\naddress = \"127.0.0.1:0\"\n"},
	{name: "metrics on every interface", doc: hello + "[metrics]\naddress = \":9464\"\n"},
	{name: "metrics off", doc: hello + "[metrics]\naddress = \"\"\n"},
	{
		name: "metrics address not a string",
		doc:  hello + "[metrics]\naddress = 9464\n",
		want: []string{`config.toml:10:11: metrics.address`}, lines: 1,
	},
	{
		name: "metrics address without port",
		doc:  hello + "[metrics]\naddress = \"127.0.0.1\"\n",
		want: []string{`config.toml:10:1: metrics.address "127.0.0.1": want host:port`}, lines: 1,
	},
	{
		name: "metrics port out of range",
		doc:  hello + "[metrics]\naddress = \"127.0.0.1:99999\"\n",
		want: []string{`metrics.address "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`}, lines: 1,
	},
	{
		name: "metrics bad host",
		doc:  hello + "[metrics]\naddress = \"my host:9464\"\n",
		want: []string{`metrics.address "my host:9464": bad host "my host"`}, lines: 1,
	},
	{
		name: "metrics on a unix socket",
		doc:  hello + "[metrics]\naddress = \"unix:/run/m.sock\"\n",
		want: []string{`metrics.address "unix:/run/m.sock": want host:port (Prometheus scrapes over TCP)`}, lines: 1,
	},
	{
		name: "metrics on a listener's address",
		doc:  hello + "[metrics]\naddress = \"127.0.0.1:8080\"\n",
		want: []string{`config.toml:7:1: listener "web": address "127.0.0.1:8080" is already used by metrics.address`}, lines: 1,
	},
	{
		name: "metrics and a listener on port 0",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"127.0.0.1:0"`, 1) + "[metrics]\naddress = \"127.0.0.1:0\"\n",
	},
	{
		name: "unknown key in admin",
		doc:  "[admin]\nsocket = \"/run/sy.sock\"\nmode = 384\n" + hello,
		want: []string{`config.toml:3:1: unknown key "admin.mode"`},
	},
	{
		name: "unknown key in plugin",
		doc:  "[plugins.hello]\npath = \"plugins/hello\"\npth = \"plugins/hello\"\n",
		want: []string{`config.toml:3:1: unknown key "plugins.hello.pth"`}, lines: 1,
	},
	{
		name: "unknown key in listener",
		doc:  hello + "adress = \"127.0.0.1:8081\"\n",
		want: []string{`config.toml:9:1: unknown key "listeners.adress"`}, lines: 1,
	},
	{
		name: "unknown key beside settings",
		doc: "[plugins.hello]\npath = \"plugins/hello\"\nsetings.greeting = \"hi\"\n" +
			"[plugins.hello.settings]\nanything.goes = [1, { deep = true }]\n",
		want: []string{`config.toml:3:1: unknown key "plugins.hello.setings"`}, lines: 1,
	},
	{
		name: "unknown key in inline table",
		doc:  "plugins = { hello = { path = \"x\", wtach = false } }\n",
		want: []string{`config.toml:1:35: unknown key "plugins.hello.wtach"`}, lines: 1,
	},
	{
		name: "unknown key in inline listener",
		doc:  "[plugins.hello]\npath = \"x\"\n[[listeners]]\nname = \"a\"\n[[listeners]]\nname = \"b\"\ncolor = 1\n",
		want: []string{`config.toml:7:1: unknown key "listeners.color"`},
	},
	{
		name: "unknown key in timer",
		doc:  hello + "[[timers]]\nname = \"tick\"\nevry = \"1m\"\nplugin = \"hello\"\n",
		want: []string{`config.toml:11:1: unknown key "timers.evry"`}, lines: 1,
	},
	{
		name: "unknown sub-table of a listener",
		doc:  hello + "[listeners.tls]\ncert = \"x\"\n",
		want: []string{`config.toml:9:12: unknown table "listeners.tls"`}, lines: 1,
	},
	{
		name: "keys are case sensitive",
		doc:  "[plugins.hello]\nPath = \"x\"\n",
		want: []string{`config.toml:2:1: unknown key "plugins.hello.Path"`},
	},
	{
		name: "name of a plugin is not a key",
		doc:  "[plugins.hello]\npath = \"x\"\nname = \"hello\"\n",
		want: []string{`config.toml:3:1: unknown key "plugins.hello.name"`},
	},
	{
		name: "several unknown keys",
		doc:  "colour = 1\n[plugins.hello]\npth = \"x\"\npath = \"x\"\n[[listeners]]\nnmae = \"web\"\n",
		want: []string{
			`config.toml:1:1: unknown key "colour"`,
			`config.toml:3:1: unknown key "plugins.hello.pth"`,
			`config.toml:6:1: unknown key "listeners.nmae"`,
		},
		lines: 3,
	},
	{
		name: "keys inside settings are free",
		doc: hello + "[plugins.hello.settings]\nanything = 1\nnested.deeper = { x = [1, \"two\"] }\n" +
			"[[plugins.hello.settings.list]]\nk = 1\n[plugins.hello.settings.list.sub]\nz = true\n",
	},

	// Type errors.
	{
		name: "string for an integer",
		doc:  hello + "max_body = \"10MB\"\n",
		want: []string{`config.toml:9:12: listeners.max_body: want an integer, got a string`}, lines: 1,
	},
	{
		name: "integer for a string",
		doc:  "[plugins.hello]\npath = 42\n",
		want: []string{`config.toml:2:8: plugins.hello.path: want a string, got an integer`},
	},
	{
		name: "bad duration",
		doc:  "[plugins.hello]\npath = \"x\"\ndrain_timeout = \"30 seconds\"\n",
		want: []string{`config.toml:3:17: plugins.hello.drain_timeout: bad duration "30 seconds"`},
	},
	{
		name: "integer for a duration",
		doc:  "[plugins.hello]\npath = \"x\"\ncall_timeout = 10\n",
		want: []string{`config.toml:3:16: plugins.hello.call_timeout: want a duration such as "30s", got an integer`},
	},
	{
		name: "float for a duration",
		doc:  hello + "idle_timeout = 1.5\n",
		want: []string{`config.toml:9:16: listeners.idle_timeout: want a duration such as "30s", got a float`},
	},
	{
		name: "string for a boolean",
		doc:  "[plugins.hello]\npath = \"x\"\nwatch = \"yes\"\n",
		want: []string{`config.toml:3:9: plugins.hello.watch: want a boolean, got a string`},
	},
	{
		name: "string for args",
		doc:  "[plugins.hello]\npath = \"x\"\nargs = \"-v\"\n",
		want: []string{`config.toml:3:8: plugins.hello.args: want an array of strings, got a string`},
	},
	{
		name: "integer in args",
		doc:  "[plugins.hello]\npath = \"x\"\nargs = [\"-v\", 2]\n",
		want: []string{`config.toml:3:15: plugins.hello.args: want a string, got an integer`},
	},
	{
		name: "integer in env",
		doc:  "[plugins.hello]\npath = \"x\"\nenv = { DEBUG = 1 }\n",
		want: []string{`config.toml:3:17: plugins.hello.env.DEBUG: want a string, got an integer`},
	},
	{
		name: "integer for settings",
		doc:  "[plugins.hello]\npath = \"x\"\nsettings = 3\n",
		want: []string{`config.toml:3:12: plugins.hello.settings: want a table, got an integer`},
	},
	{
		name: "table for a string",
		doc:  "[plugins.hello.path]\nx = 1\n",
		want: []string{`config.toml:1:16: plugins.hello.path: want a string, got a table`},
	},
	{
		name: "dotted key through a string",
		doc:  "[plugins.hello]\npath.x = 1\n",
		want: []string{`config.toml:2:6: plugins.hello.path: want a string, got a table`},
	},
	{
		name: "table for listeners",
		doc:  "[listeners]\nname = \"x\"\n",
		want: []string{`config.toml:1:2: listeners: want an array of tables, got a table`},
	},
	{
		name: "array of tables for plugins",
		doc:  "[[plugins]]\npath = \"x\"\n",
		want: []string{`config.toml:1:3: plugins: want a table, got an array of tables`},
	},
	{
		name: "type errors and unknown keys together",
		doc:  "[plugins.hello]\npath = 1\nwatch = 1\nbogus = 1\n",
		want: []string{
			`config.toml:2:8: plugins.hello.path: want a string, got an integer`,
			`config.toml:3:9: plugins.hello.watch: want a boolean, got an integer`,
			`config.toml:4:1: unknown key "plugins.hello.bogus"`,
		},
		lines: 3,
	},

	// Syntax and other decoding errors.
	{
		name: "unclosed table header",
		doc:  "[plugins.hello\npath = \"x\"\n",
		want: []string{`config.toml:1:15: expected ']' to close table name`},
	},
	{
		name: "missing value",
		doc:  "[plugins.hello]\npath =\n",
		want: []string{`config.toml:2:`},
	},
	{
		name: "duplicate key",
		doc:  "[plugins.hello]\npath = \"x\"\npath = \"y\"\n",
		want: []string{`config.toml:3:1: `, `path`},
	},
	{
		name: "integer out of range",
		doc:  hello + "max_body = 99999999999999999999\n",
		want: []string{`config.toml:9:12: `},
	},

	// Plugins.
	{name: "plugin name with digits, dash and underscore", doc: "[plugins.a-b_9]\npath = \"x\"\n"},
	{
		name: "plugin name with upper case",
		doc:  "[plugins.Hello]\npath = \"x\"\n",
		want: []string{`config.toml:1:10: plugin "Hello": bad name`}, lines: 1,
	},
	{
		name: "plugin name starting with a dash",
		doc:  "[plugins.-x]\npath = \"x\"\n",
		want: []string{`plugin "-x": bad name`},
	},
	{
		name: "plugin name with a slash",
		doc:  "[plugins.\"a/b\"]\npath = \"x\"\n",
		want: []string{`plugin "a/b": bad name`},
	},
	{
		name: "plugin without path",
		doc:  "[plugins.hello]\nwatch = true\n",
		want: []string{`config.toml:1:10: plugin "hello": path is required`}, lines: 1,
	},
	{
		name: "plugin with bad env name",
		doc:  "[plugins.hello]\npath = \"x\"\nenv = { \"A=B\" = \"1\" }\n",
		want: []string{`config.toml:3:9: plugin "hello": env: bad variable name "A=B"`},
	},
	{
		name: "plugin arg with NUL",
		doc:  "[plugins.hello]\npath = \"x\"\nargs = [\"a\\u0000b\"]\n",
		want: []string{`plugin "hello": args[0] contains a NUL byte`},
	},

	// Listeners.
	{
		name: "listener without name",
		doc:  "[plugins.hello]\npath = \"x\"\n[[listeners]]\nprotocol = \"http\"\naddress = \":8080\"\nplugin = \"hello\"\n",
		want: []string{`config.toml:3:3: listener #1: name is required`}, lines: 1,
	},
	{
		name: "listener name with a space",
		doc:  strings.Replace(hello, `"web"`, `"my web"`, 1),
		want: []string{`config.toml:5:1: listener "my web": bad name`}, lines: 1,
	},
	{
		name: "listener names not unique",
		doc:  hello + "[[listeners]]\nname = \"web\"\nprotocol = \"http\"\naddress = \"127.0.0.1:8081\"\nplugin = \"hello\"\n",
		want: []string{`config.toml:10:1: listener "web": name is used by another listener`}, lines: 1,
	},
	{
		name: "listener without protocol",
		doc:  strings.Replace(hello, "protocol = \"http\"\n", "", 1),
		want: []string{`config.toml:4:3: listener "web": protocol is required`}, lines: 1,
	},
	{
		name: "unknown protocol",
		doc:  strings.Replace(hello, `"http"`, `"ftp"`, 1),
		want: []string{`config.toml:6:1: listener "web": unknown protocol "ftp"`}, lines: 1,
	},
	{name: "line", doc: strings.Replace(hello, `"http"`, `"line"`, 1) + "max_line = 1000\ntelnet = true\nutf8 = false\nidle_timeout = \"1m\"\nmax_output = 65536\nwrite_timeout = \"5s\"\n"},
	{
		name: "line keys on http",
		doc:  hello + "max_output = 10\ntelnet = true\n",
		want: []string{
			`config.toml:9:1: listener "web": max_output applies only to line listeners, not http`,
			`config.toml:10:1: listener "web": telnet applies only to line listeners, not http`,
		},
		lines: 2,
	},
	{name: "dns", doc: strings.Replace(hello, `"http"`, `"dns"`, 1)},
	{name: "dns limits", doc: strings.Replace(hello, `"http"`, `"dns"`, 1) + "idle_timeout = \"3s\"\nmax_inflight = 64\nmax_connections = 100\n"},
	{name: "http limits", doc: hello + "max_connections = 5\nwrite_timeout = \"5s\"\n"},
	{
		name: "zero max_connections",
		doc:  hello + "max_connections = 0\n",
		want: []string{`config.toml:9:1: listener "web": max_connections must be positive, got 0`}, lines: 1,
	},
	{
		name: "max_inflight on http",
		doc:  hello + "max_inflight = 5\n",
		want: []string{`config.toml:9:1: listener "web": max_inflight applies only to dns listeners, not http`}, lines: 1,
	},
	{name: "plugin fault keys", doc: "[plugins.hello]\npath = \"x\"\nsha256 = \"" + strings.Repeat("AB", 32) + "\"\nhung_calls = 2\nmax_memory = 1048576\nquarantine_after = 3\nrollback = false\nrollback_window = \"5s\"\n"},
	{
		name: "bad sha256",
		doc:  "[plugins.hello]\npath = \"x\"\nsha256 = \"abc\"\n",
		want: []string{`config.toml:3:1: plugin "hello": sha256 must be 64 hex digits, got "abc"`}, lines: 1,
	},
	{
		name: "zero hung_calls",
		doc:  "[plugins.hello]\npath = \"x\"\nhung_calls = 0\n",
		want: []string{`config.toml:3:1: plugin "hello": hung_calls must be positive, got 0`}, lines: 1,
	},
	{name: "privileges", doc: hello + "[privileges]\nuser = \"nobody\"\ngroup = \"nogroup\"\n"},
	{
		name: "group without user",
		doc:  hello + "[privileges]\ngroup = \"nogroup\"\n",
		want: []string{`privileges.group needs privileges.user`}, lines: 1,
	},
	{
		name: "scgi keys on dns",
		doc:  strings.Replace(hello, `"http"`, `"dns"`, 1) + "timeout = \"5s\"\n",
		want: []string{`config.toml:9:1: listener "web": timeout applies only to scgi listeners, not dns`}, lines: 1,
	},
	{name: "scgi", doc: strings.Replace(hello, `"http"`, `"scgi"`, 1) + "timeout = \"5s\"\nmax_body = 1024\nmax_header_bytes = 4096\n"},
	{name: "scgi in the runtime dir", doc: strings.Replace(strings.Replace(hello, `"http"`, `"scgi"`, 1), `"127.0.0.1:8080"`, `"unix:$RUNTIME/scgi.sock"`, 1)},
	{
		name: "http timeouts on scgi",
		doc:  strings.Replace(hello, `"http"`, `"scgi"`, 1) + "idle_timeout = \"5s\"\n",
		want: []string{`config.toml:9:1: listener "web": idle_timeout applies only to http and line and dns listeners, not scgi`}, lines: 1,
	},
	{
		name: "listener without address",
		doc:  strings.Replace(hello, "address = \"127.0.0.1:8080\"\n", "", 1),
		want: []string{`config.toml:4:3: listener "web": address is required`}, lines: 1,
	},
	{name: "empty host", doc: strings.Replace(hello, `"127.0.0.1:8080"`, `":8080"`, 1)},
	{name: "host name", doc: strings.Replace(hello, `"127.0.0.1:8080"`, `"localhost:8080"`, 1)},
	{name: "IPv6 address", doc: strings.Replace(hello, `"127.0.0.1:8080"`, `"[::1]:8080"`, 1)},
	{name: "port 65535", doc: strings.Replace(hello, `"127.0.0.1:8080"`, `"127.0.0.1:65535"`, 1)},
	{name: "relative unix address", doc: strings.Replace(hello, `"127.0.0.1:8080"`, `"unix:run/web.sock"`, 1)},
	{name: "absolute unix address", doc: strings.Replace(hello, `"127.0.0.1:8080"`, `"unix:/run/web.sock"`, 1)},
	{
		name: "address without port",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"127.0.0.1"`, 1),
		want: []string{`config.toml:7:1: listener "web": address "127.0.0.1": want host:port or unix:PATH`}, lines: 1,
	},
	{
		name: "named port",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"127.0.0.1:http"`, 1),
		want: []string{`listener "web": address "127.0.0.1:http": port "http" is not a number from 0 to 65535`}, lines: 1,
	},
	{
		name: "port out of range",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"127.0.0.1:65536"`, 1),
		want: []string{`port "65536" is not a number from 0 to 65535`}, lines: 1,
	},
	{
		name: "negative port",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"127.0.0.1:-1"`, 1),
		want: []string{`port "-1" is not a number`}, lines: 1,
	},
	{
		name: "bad host",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"my host:8080"`, 1),
		want: []string{`listener "web": address "my host:8080": bad host "my host"`}, lines: 1,
	},
	{
		name: "unix address without path",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"unix:"`, 1),
		want: []string{`listener "web": address "unix:": the socket path is missing`}, lines: 1,
	},
	{
		name: "unix address too long",
		doc:  strings.Replace(hello, `"127.0.0.1:8080"`, `"unix:/`+strings.Repeat("s", 120)+`"`, 1),
		want: []string{`longer than a UNIX socket allows`}, lines: 1,
	},
	{
		name: "unix address for dns",
		doc:  strings.Replace(strings.Replace(hello, `"127.0.0.1:8080"`, `"unix:/run/dns.sock"`, 1), `"http"`, `"dns"`, 1),
		want: []string{
			`config.toml:7:1: listener "web": address "unix:/run/dns.sock": a dns listener cannot use a UNIX socket`,
		},
		lines: 1,
	},
	{
		name: "shared address",
		doc:  hello + "[[listeners]]\nname = \"web2\"\nprotocol = \"http\"\naddress = \"127.0.0.1:8080\"\nplugin = \"hello\"\n",
		want: []string{`config.toml:12:1: listener "web2": address "127.0.0.1:8080" is already used by listener "web"`}, lines: 1,
	},
	{
		name: "shared unix path, relative and absolute",
		doc: "[plugins.hello]\npath = \"x\"\n" +
			"[[listeners]]\nname = \"a\"\nprotocol = \"http\"\naddress = \"unix:run/../run/web.sock\"\nplugin = \"hello\"\n" +
			"[[listeners]]\nname = \"b\"\nprotocol = \"http\"\naddress = \"unix:/etc/switchyard/run/web.sock\"\nplugin = \"hello\"\n",
		want: []string{`listener "b": address "unix:/etc/switchyard/run/web.sock" is already used by listener "a"`}, lines: 1,
	},
	{
		name: "listener on the admin socket",
		doc:  "[admin]\nsocket = \"/run/sy.sock\"\n" + strings.Replace(hello, `"127.0.0.1:8080"`, `"unix:/run/sy.sock"`, 1),
		want: []string{`address "unix:/run/sy.sock" is already used by admin.socket`}, lines: 1,
	},
	{
		name: "port 0 twice",
		doc: "[plugins.hello]\npath = \"x\"\n" +
			"[[listeners]]\nname = \"a\"\nprotocol = \"http\"\naddress = \"127.0.0.1:0\"\nplugin = \"hello\"\n" +
			"[[listeners]]\nname = \"b\"\nprotocol = \"http\"\naddress = \"127.0.0.1:0\"\nplugin = \"hello\"\n",
	},
	{
		name: "listener without plugin",
		doc:  strings.Replace(hello, "plugin = \"hello\"\n", "", 1),
		want: []string{`config.toml:4:3: listener "web": plugin is required`}, lines: 1,
	},
	{
		name: "listener with undefined plugin",
		doc:  strings.Replace(hello, `plugin = "hello"`, `plugin = "helo"`, 1),
		want: []string{`config.toml:8:1: listener "web": plugin "helo" is not defined`}, lines: 1,
	},
	{
		name: "key for another protocol",
		doc:  hello + "max_line = 512\ntimeout = \"5s\"\n",
		want: []string{
			`config.toml:9:1: listener "web": max_line applies only to line listeners, not http`,
			`config.toml:10:1: listener "web": timeout applies only to scgi listeners, not http`,
		},
		lines: 2,
	},
	{
		name: "false for another protocol",
		doc:  hello + "telnet = false\n",
		want: []string{`config.toml:9:1: listener "web": telnet applies only to line listeners, not http`}, lines: 1,
	},

	// Durations and sizes.
	{
		name: "zero duration",
		doc:  "[plugins.hello]\npath = \"x\"\ndrain_timeout = \"0s\"\n",
		want: []string{`config.toml:3:1: plugin "hello": drain_timeout must be positive, got 0s`}, lines: 1,
	},
	{
		name: "negative duration",
		doc:  hello + "read_timeout = \"-1s\"\n",
		want: []string{`config.toml:9:1: listener "web": read_timeout must be positive, got -1s`}, lines: 1,
	},
	{
		name: "zero size",
		doc:  hello + "max_body = 0\n",
		want: []string{`config.toml:9:1: listener "web": max_body must be positive, got 0`}, lines: 1,
	},
	{
		name: "negative size",
		doc:  hello + "max_header_bytes = -1\n",
		want: []string{`config.toml:9:1: listener "web": max_header_bytes must be positive, got -1`}, lines: 1,
	},
	{
		name: "zero size on a line listener",
		doc:  strings.Replace(hello, `"http"`, `"line"`, 1) + "max_line = 0\n",
		want: []string{`config.toml:9:1: listener "web": max_line must be positive, got 0`}, lines: 1,
	},
	{name: "small positive values", doc: hello + "max_body = 1\nread_timeout = \"1ns\"\n"},

	// Settings.
	{
		name: "settings NaN",
		doc:  "[plugins.hello]\npath = \"x\"\nsettings = { ratio = nan }\n",
		want: []string{`config.toml:3:14: plugin "hello": settings.ratio: NaN cannot be passed to the plugin as JSON`}, lines: 1,
	},
	{
		name: "settings infinity deep inside",
		doc:  "[plugins.hello.settings]\nlimits = [1, { max = inf }]\n[plugins.hello]\npath = \"x\"\n",
		want: []string{`plugin "hello": settings.limits.max: +Inf cannot be passed to the plugin as JSON`}, lines: 1,
	},
	{
		name: "settings numbers",
		doc: `[plugins.hello]
path = "x"
[plugins.hello.settings]
f = [1e-300, 5e-324, -0.0, 1.7976931348623157e308, 0.1, -1e22]
i = [9223372036854775807, -9223372036854775808, 0x7f]
`,
	},
	{
		name: "settings strings and keys",
		doc: `[plugins.hello]
path = "x"
[plugins.hello.settings]
s = ["a\u0000b\u001f\u007f\t\r\n'\"\\", "\u2028\U0001F600", '''
x'y
''', "'''", ""]
"" = 1
"a.b" = 2
"a b" = 3
"é" = 4
"'" = 5
"\"" = 6
"\n" = 7
`,
	},
	{
		name: "settings structures",
		doc: `[plugins.hello]
path = "x"
[plugins.hello.settings]
a = [[1, 2], ["x"], [], [{}], [{a = []}]]
b = [{}, {}]
c = {}
d = { e = {} }
m = [1, 1.5, "s", true, 2020-01-01, {a = 1}, [2]]
[[plugins.hello.settings.arr]]
[[plugins.hello.settings.arr]]
x = 1
[[plugins.hello.settings.arr.sub]]
y = 2
[plugins.hello.settings.arr.t]
z = 3
`,
	},
	{
		name: "odd but valid strings",
		doc: `[plugins.hello]
path = "x y/\u00e9"
args = ["", "'", "\n"]
env = { "A B" = "", "é" = "'\n" }
`,
	},
	{name: "settings dates", doc: "[plugins.hello]\npath = \"x\"\n[plugins.hello.settings]\nday = 2024-02-29\nat = 23:59:59.123\n"},

	// Timers.
	{name: "timer", doc: hello + "[[timers]]\nname = \"tick\"\nevery = \"1m\"\nplugin = \"hello\"\n"},
	{
		name: "timer problems",
		doc:  hello + "[[timers]]\nname = \"Tick\"\nplugin = \"nope\"\n[[timers]]\nname = \"b\"\nevery = \"0s\"\nplugin = \"hello\"\n",
		want: []string{
			`config.toml:9:3: timer "Tick": every is required`,
			`config.toml:10:1: timer "Tick": bad name`,
			`config.toml:11:1: timer "Tick": plugin "nope" is not defined`,
			`config.toml:14:1: timer "b": every must be positive, got 0s`,
		},
		lines: 4,
	},

	// Everything at once is reported at once.
	{
		name: "several validation problems",
		doc: "[plugins.Bad]\n" +
			"[[listeners]]\nname = \"web\"\nprotocol = \"line\"\naddress = \"nowhere\"\nplugin = \"helo\"\n",
		want: []string{
			`config.toml:1:10: plugin "Bad": bad name`,
			`config.toml:1:10: plugin "Bad": path is required`,
			`config.toml:5:1: listener "web": address "nowhere": want host:port or unix:PATH`,
			`config.toml:6:1: listener "web": plugin "helo" is not defined`,
		},
		lines: 4,
	},
}

func TestParse(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc), "config.toml", base)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				roundTrip(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tc.want)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || strings.Contains(l, w)
				}
				if !found {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
			if tc.lines > 0 && len(lines) != tc.lines {
				t.Errorf("error has %d lines, want %d:\n%v", len(lines), tc.lines, err)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "config.toml:") {
					t.Errorf("error line %q does not name its source", l)
				}
			}
		})
	}
}

// roundTrip checks that c's Marshal output parses back to c.
func roundTrip(t *testing.T, c *Config) {
	t.Helper()
	out, err := c.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	c2, err := Parse(out, c.Source, c.Dir)
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("Parse(Marshal()) differs:\n got %#v\nwant %#v\n%s", c2, c, out)
	}
}

func TestFullConfig(t *testing.T) {
	c, err := Parse([]byte(fullConfig), "full.toml", base)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)

	h := c.Plugins["hello"]
	if h.Name != "hello" || h.Path != "/etc/switchyard/plugins/hello" || h.WatchEnabled() {
		t.Errorf("hello = %+v", h)
	}
	if want := []string{"-v", "--greeting=hi there"}; !reflect.DeepEqual(h.Args, want) {
		t.Errorf("args = %q, want %q", h.Args, want)
	}
	if h.Env["LANG"] != "C.UTF-8" || h.Env["HELLO_MODE"] != "loud" {
		t.Errorf("env = %v", h.Env)
	}
	if h.DrainTimeout.D() != 45*time.Second || h.CallTimeout.D() != 90*time.Second || h.StartTimeout.D() != 2*time.Second {
		t.Errorf("timeouts = %v %v %v", h.DrainTimeout, h.CallTimeout, h.StartTimeout)
	}
	// Dates and times become the strings the plugin sees in JSON.
	s := h.Settings
	for key, want := range map[string]any{
		"greeting": "hello",
		"count":    int64(3),
		"ratio":    0.5,
		"enabled":  true,
		"when":     "1979-05-27T07:32:00-08:00",
		"day":      "1979-05-27",
		"at":       "07:32:00",
		"local":    "1979-05-27T07:32:00.5",
		"empty":    []any{},
	} {
		if !reflect.DeepEqual(s[key], want) {
			t.Errorf("settings[%q] = %#v, want %#v", key, s[key], want)
		}
	}
	if routes, _ := s["routes"].([]any); len(routes) != 2 {
		t.Errorf("settings.routes = %#v", s["routes"])
	}

	web := c.Listeners[0]
	if web.MaxBody != 1<<20 || web.MaxHeaderBytes != 64<<10 || web.ReadHeaderTimeout.D() != 5*time.Second ||
		web.ReadTimeout.D() != 30*time.Second || web.IdleTimeout.D() != 2*time.Minute {
		t.Errorf("web = %+v", web)
	}
	if l := c.Listeners[1]; l.Address != "unix:/etc/switchyard/run/web.sock" || l.Network() != "unix" || l.SocketAddress() != "/etc/switchyard/run/web.sock" {
		t.Errorf("local = %q %q %q", l.Address, l.Network(), l.SocketAddress())
	}
	if l := c.Listeners[2]; l.Network() != "tcp" || l.SocketAddress() != "[::1]:0" {
		t.Errorf("v6 = %q %q", l.Network(), l.SocketAddress())
	}
	if c.Admin.Socket != "/etc/switchyard/run/admin.sock" || c.State.Dir != "/var/lib/switchyard" {
		t.Errorf("admin, state = %+v, %+v", c.Admin, c.State)
	}
	if c.Source != "full.toml" || c.Dir != base {
		t.Errorf("source, dir = %q, %q", c.Source, c.Dir)
	}
}

func TestDefaults(t *testing.T) {
	doc := "[plugins.hello]\npath = \"x\"\n" +
		"[[listeners]]\nname = \"web\"\nprotocol = \"http\"\naddress = \":8080\"\nplugin = \"hello\"\n"
	c, err := Parse([]byte(doc), "", "")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	tests := []struct {
		name      string
		got, want any
	}{
		{"source", c.Source, "config"},
		{"dir", c.Dir, wd},
		{"admin.socket", c.Admin.Socket, ""},
		{"state.dir", c.State.Dir, ""},
		{"timers", c.Timers, []*Timer(nil)},
		{"plugin name", c.Plugins["hello"].Name, "hello"},
		{"args", c.Plugins["hello"].Args, []string(nil)},
		{"env", c.Plugins["hello"].Env, map[string]string(nil)},
		{"settings", c.Plugins["hello"].Settings, map[string]any{}},
		{"watch", c.Plugins["hello"].Watch, ptr(true)},
		{"drain_timeout", c.Plugins["hello"].DrainTimeout.D(), 30 * time.Second},
		{"call_timeout", c.Plugins["hello"].CallTimeout.D(), 10 * time.Second},
		{"start_timeout", c.Plugins["hello"].StartTimeout.D(), 5 * time.Second},
		{"max_body", c.Listeners[0].MaxBody, int64(10485760)},
		{"max_header_bytes", c.Listeners[0].MaxHeaderBytes, 1048576},
		{"read_header_timeout", c.Listeners[0].ReadHeaderTimeout.D(), 10 * time.Second},
		{"read_timeout", c.Listeners[0].ReadTimeout.D(), 60 * time.Second},
		{"idle_timeout", c.Listeners[0].IdleTimeout.D(), 120 * time.Second},
		{"timeout", c.Listeners[0].Timeout.D(), 30 * time.Second},
		{"max_line", c.Listeners[0].MaxLine, 4096},
		{"telnet", c.Listeners[0].Telnet, false},
		{"utf8", c.Listeners[0].UTF8, ptr(true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}

	empty, err := Parse(nil, "empty", base)
	if err != nil {
		t.Fatal(err)
	}
	if empty.Plugins == nil || empty.Listeners != nil {
		t.Errorf("empty config: plugins %#v, listeners %#v", empty.Plugins, empty.Listeners)
	}
}

func TestRelativePaths(t *testing.T) {
	doc := `[admin]
socket = "run/admin.sock"
[state]
dir = "../var/switchyard"
[plugins.rel]
path = "plugins/./rel"
[plugins.abs]
path = "/opt/plugins/abs"
[plugins.unclean]
path = "/opt//plugins/./unclean"
[plugins.tilde]
path = "~/plugins/tilde"
[[listeners]]
name = "rel"
protocol = "http"
address = "unix:run/rel.sock"
plugin = "rel"
[[listeners]]
name = "abs"
protocol = "http"
address = "unix:/run/abs.sock"
plugin = "abs"
`
	c, err := Parse([]byte(doc), "paths.toml", base)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, got, want string }{
		{"admin.socket", c.Admin.Socket, "/etc/switchyard/run/admin.sock"},
		{"state.dir", c.State.Dir, "/etc/var/switchyard"},
		{"relative plugin", c.Plugins["rel"].Path, "/etc/switchyard/plugins/rel"},
		{"absolute plugin", c.Plugins["abs"].Path, "/opt/plugins/abs"},
		{"absolute plugin is cleaned", c.Plugins["unclean"].Path, "/opt/plugins/unclean"},
		{"tilde is not expanded", c.Plugins["tilde"].Path, "/etc/switchyard/~/plugins/tilde"},
		{"relative unix address", c.Listeners[0].Address, "unix:/etc/switchyard/run/rel.sock"},
		{"absolute unix address", c.Listeners[1].Address, "unix:/run/abs.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}

	// A relative base directory is made absolute.
	c, err = Parse([]byte(doc), "paths.toml", "conf")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "conf", "plugins/rel"); c.Plugins["rel"].Path != want {
		t.Errorf("with a relative base: %q, want %q", c.Plugins["rel"].Path, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "switchyard.toml")
	if err := os.WriteFile(path, []byte(hello+"pth = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":9:1: unknown key") {
		t.Fatalf("Load: %v, want an error naming %s:9:1", err, path)
	}

	if err := os.WriteFile(path, []byte(hello), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != path || c.Dir != dir || c.Plugins["hello"].Path != filepath.Join(dir, "plugins/hello") {
		t.Errorf("source %q, dir %q, path %q", c.Source, c.Dir, c.Plugins["hello"].Path)
	}

	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestDefault(t *testing.T) {
	c, err := Default("/opt/switchyard/bin")
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != DefaultSource || c.Admin.Socket != "" || c.State.Dir != "" {
		t.Errorf("source %q, admin %+v, state %+v", c.Source, c.Admin, c.State)
	}
	if c.Metrics.Address != "127.0.0.1:9464" {
		t.Errorf("metrics %+v, want the DESIGN's 127.0.0.1:9464", c.Metrics)
	}
	if len(c.Timers) != 1 || *c.Timers[0] != (Timer{Name: "announce", Every: Duration(time.Minute), Plugin: "chat"}) {
		t.Errorf("timers %v", c.Timers)
	}
	for _, name := range []string{"hello", "probe", "inbox", "zone", "smtp", "chat"} {
		p := c.Plugins[name]
		if p == nil || p.Path != "/opt/switchyard/bin/plugins/"+name {
			t.Errorf("plugin %s = %+v", name, p)
		}
	}
	if len(c.Plugins) != 6 || len(c.Listeners) != 6 {
		t.Fatalf("plugins %v, listeners %v", c.Plugins, c.Listeners)
	}
	for i, want := range []Listener{
		{Name: "hello", Protocol: "http", Address: "127.0.0.1:8080", Plugin: "hello"},
		{Name: "probe", Protocol: "http", Address: "127.0.0.1:8081", Plugin: "probe"},
		{Name: "gateway", Protocol: "scgi", Address: "unix:$RUNTIME/scgi.sock", Plugin: "inbox"},
		{Name: "dns", Protocol: "dns", Address: "127.0.0.1:5353", Plugin: "zone"},
		{Name: "mail", Protocol: "line", Address: "127.0.0.1:2525", Plugin: "smtp"},
		{Name: "chat", Protocol: "line", Address: "127.0.0.1:4000", Plugin: "chat"},
	} {
		l := c.Listeners[i]
		if l.Name != want.Name || l.Protocol != want.Protocol || l.Address != want.Address || l.Plugin != want.Plugin {
			t.Errorf("listener %d = %+v, want %+v", i, l, want)
		}
	}
	roundTrip(t, c)

	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "default.golden.toml")
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("Marshal() differs from %s (run go test -update if the change is intended):\n%s", golden, out)
	}
}

// TestDecoderAgrees checks the backstop: go-toml's strict decoder rejects
// the unknown keys the scanner reports, and decodeError words them the same
// on the same lines. (The decoder points at the start of a table header, the
// scanner at its unknown part; and the decoder matches keys regardless of
// case, which is why the scanner checks them first.)
func TestDecoderAgrees(t *testing.T) {
	noColumn := regexp.MustCompile(`^(config\.toml:\d+):\d+:`)
	strip := func(err error) string {
		lines := strings.Split(err.Error(), "\n")
		for i, l := range lines {
			lines[i] = noColumn.ReplaceAllString(l, "$1:")
		}
		return strings.Join(lines, "\n")
	}
	for _, tc := range cases {
		if len(tc.want) == 0 || !strings.Contains(tc.want[0], "unknown key") && !strings.Contains(tc.want[0], "unknown table") ||
			tc.name == "keys are case sensitive" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s := newScanner([]byte(tc.doc), "config.toml")
			want := s.run()
			var c Config
			err := toml.NewDecoder(strings.NewReader(tc.doc)).DisallowUnknownFields().Decode(&c)
			if err == nil {
				t.Fatal("the decoder accepts the document")
			}
			if got := s.decodeError(err); strip(got) != strip(want) {
				t.Errorf("decoder says\n%v\nscanner says\n%v", got, want)
			}
		})
	}
}

func TestSameProcess(t *testing.T) {
	c, err := Parse([]byte(fullConfig), "a", base)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Plugins["hello"]
	tests := []struct {
		name   string
		change func(q *Plugin)
		same   bool
	}{
		{"identical", func(q *Plugin) {}, true},
		{"timeouts", func(q *Plugin) { q.DrainTimeout, q.CallTimeout, q.StartTimeout = 1, 2, 3 }, true},
		{"watch", func(q *Plugin) { q.Watch = ptr(true) }, true},
		{"path", func(q *Plugin) { q.Path += "2" }, false},
		{"args", func(q *Plugin) { q.Args = append(q.Args, "-x") }, false},
		{"env", func(q *Plugin) { q.Env["LANG"] = "C" }, false},
		{"settings", func(q *Plugin) { q.Settings["greeting"] = "hi" }, false},
		{"nested settings", func(q *Plugin) { q.Settings["tags"].([]any)[0] = "z" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c2, err := Parse([]byte(fullConfig), "b", base)
			if err != nil {
				t.Fatal(err)
			}
			q := c2.Plugins["hello"]
			tt.change(q)
			if got := p.SameProcess(q); got != tt.same {
				t.Errorf("SameProcess = %v, want %v", got, tt.same)
			}
		})
	}
	if !(&Plugin{Path: "x"}).SameProcess(&Plugin{Path: "x", Args: []string{}, Settings: map[string]any{}}) {
		t.Error("nil and empty args or settings differ")
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		text string
		d    time.Duration
		out  string
	}{
		{"30s", 30 * time.Second, "30s"},
		{"1m30s", 90 * time.Second, "1m30s"},
		{"90s", 90 * time.Second, "1m30s"},
		{"2h", 2 * time.Hour, "2h"},
		{"1h0m30s", time.Hour + 30*time.Second, "1h0m30s"},
		{"60m", time.Hour, "1h"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"0", 0, "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			var d Duration
			if err := d.UnmarshalText([]byte(tt.text)); err != nil {
				t.Fatal(err)
			}
			if d.D() != tt.d {
				t.Errorf("D() = %v, want %v", d.D(), tt.d)
			}
			out, _ := d.MarshalText()
			if string(out) != tt.out {
				t.Errorf("MarshalText = %q, want %q", out, tt.out)
			}
			var back Duration
			if err := back.UnmarshalText(out); err != nil || back != d {
				t.Errorf("round trip: %v, %v", back, err)
			}
		})
	}
	var d Duration
	if err := d.UnmarshalText([]byte("10")); err == nil {
		t.Error(`UnmarshalText("10") succeeded`)
	}
}

func TestExpandRuntime(t *testing.T) {
	doc := strings.Replace(strings.Replace(hello, `"http"`, `"scgi"`, 1), `"127.0.0.1:8080"`, `"unix:$RUNTIME/gw/scgi.sock"`, 1)
	c, err := Parse([]byte(doc), "config.toml", "/etc/sy")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ExpandRuntime("/run/user/7/switchyard"); err != nil {
		t.Fatal(err)
	}
	if got := c.Listeners[0].Address; got != "unix:/run/user/7/switchyard/gw/scgi.sock" {
		t.Errorf("address %q", got)
	}
	c, _ = Parse([]byte(doc), "config.toml", "/etc/sy")
	err = c.ExpandRuntime("/" + strings.Repeat("d", 100))
	if err == nil || !strings.Contains(err.Error(), "longer than a UNIX socket allows") {
		t.Errorf("long runtime dir: %v", err)
	}
}
