package admin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var renderTests = []struct {
	name string // golden file testdata/render/NAME.golden
	line string // the command
	data string // the reply's data
}{
	{"plugins", "plugins", `[
		{"name":"hello","path":"/opt/sy/plugins/hello","pid":4242,"generation":3,"version":"v1.2.0","state":"serving",
		 "inflight":2,"served":18234,"errors":1,"restarts":0,"last_swap":"2026-03-01T12:00:00Z","last_error":""},
		{"name":"smtp","path":"/opt/sy/plugins/smtp","pid":null,"generation":1,"version":"","state":"failed",
		 "inflight":0,"served":0,"errors":12,"restarts":5,
		 "last_error":"start plugin smtp gen 2: handshake: plugin exited before we could connect: exit status 1 (see the kernel log for its stderr)"},
		{"name":"probe","state":"starting","last_error":"line one\nline two\twith a tab"}
	]`},
	{"plugins_empty", "plugins", `[]`},
	{"plugins_not_a_list", "plugins", `{"name":"hello"}`},
	{"listeners", "listeners", `[
		{"name":"web","protocol":"http","address":"127.0.0.1:8080","plugin":"hello","connections":3,"accepted":1200,"requests":5400,"errors":0,"refused":12},
		{"name":"gateway","protocol":"scgi","address":"unix:/run/switchyard/scgi.sock","plugin":"inbox","connections":0,"accepted":7,"requests":7,"errors":2,"refused":0}
	]`},
	{"conns", "conns mail", `[
		{"id":"c-17","listener":"mail","remote":"127.0.0.1:53312","since":"2026-03-01T12:00:00Z","bytes_in":2048,"bytes_out":311},
		{"id":"c-18","listener":"mail","remote":"[::1]:40000","since":"2026-03-01T12:01:30.5+01:00","bytes_in":0}
	]`},
	{"state_list", "state list inbox/", `[{"key":"inbox/msg/1","size":120},{"key":"inbox/msg/2","size":1048576}]`},
	{"status", "status", `{
		"version":"v0.3.0","pid":1234,"uptime_s":10921,"connections":5,"config":"/etc/switchyard/switchyard.toml",
		"log_level":"info",
		"listeners":[{"name":"web","protocol":"http","address":"127.0.0.1:8080","plugin":"hello","connections":5,"accepted":9,"requests":40,"errors":0,"refused":0}],
		"plugins":[{"name":"hello","pid":4242,"generation":2,"version":"v2","state":"serving","inflight":0,"served":40,"errors":0,"restarts":0,"last_swap":"2026-03-01T12:00:00Z","last_error":null}]
	}`},
	{"status_minimal", "status", `{"version":"dev","uptime_s":0.4}`},
	{"status_not_an_object", "status", `["a"]`},
	{"reload", "reload hello", `{"generation":4,"version":"v2","pid":999}`},
	{"reload_unexpected", "reload hello", `"done"`},
	{"state_get", "state get shared/motd", `{"key":"shared/motd","value":"hello\nworld"}`},
	{"state_get_base64", "state get inbox/blob", `{"key":"inbox/blob","value":"AAEC/w==","encoding":"base64"}`},
	{"reload_config", "reload-config", `{"listeners_added":["dns"],"listeners_removed":[],"plugins_swapped":["zone"],"unchanged":3}`},
	{"log_level", "log-level debug", `"debug"`},
	{"state_put_number", "state put k v", `42`},
	{"shutdown_null", "shutdown", `null`},
	{"generic_list", "state del k", `["a","b",3]`},
	{"generic_table", "upgrade", `[{"name":"web","fd":3},{"name":"dns","fd":4,"udp":true}]`},
	{"unknown_command", "frobnicate", `{"b":[1,2],"a":{"c":null}}`},
}

func TestRender(t *testing.T) {
	for _, tt := range renderTests {
		t.Run(tt.name, func(t *testing.T) {
			var cmd Command
			if tt.line == "frobnicate" {
				cmd = Command{Name: tt.line}
			} else {
				var err error
				if cmd, err = Parse(tt.line); err != nil {
					t.Fatal(err)
				}
			}
			var got bytes.Buffer
			if err := Render(&got, cmd, json.RawMessage(tt.data)); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "render", tt.name+".golden"), got.Bytes())
		})
	}
}

// checkGolden compares got with the golden file, or rewrites it with
// -update.
func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s mismatch\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestRenderInvalidJSON(t *testing.T) {
	var b bytes.Buffer
	if err := Render(&b, Command{Name: "status"}, json.RawMessage(`{"version":`)); err == nil {
		t.Fatal("invalid JSON rendered without error")
	}
}

func TestRenderKeepsLongLastError(t *testing.T) {
	long := strings.Repeat("very long error ", 40)
	data, _ := json.Marshal([]map[string]any{{"name": "p", "last_error": long}})
	var b bytes.Buffer
	if err := Render(&b, Command{Name: "plugins"}, data); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), strings.TrimSpace(long)) {
		t.Fatalf("last_error cut short:\n%s", b.String())
	}
}
