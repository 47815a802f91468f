package kernel

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
)

const logConfig = `
[plugins.probe]
path = "plugins/probe"

[[listeners]]
name = "web"
protocol = "http"
address = "127.0.0.1:0"
plugin = "probe"
`

// logLines returns the kernel's log lines that have msg=msg (any message
// when msg is "") and every one of attrs ("key=value", as the text handler
// writes them).
func (tk *testKernel) logLines(msg string, attrs ...string) []string {
	var out []string
	for _, l := range strings.Split(tk.logs.String(), "\n") {
		if msg != "" && !strings.Contains(l, " msg="+msg+" ") && !strings.HasSuffix(l, " msg="+msg) {
			continue
		}
		match := true
		for _, a := range attrs {
			match = match && strings.Contains(l, " "+a)
		}
		if match {
			out = append(out, l)
		}
	}
	return out
}

// TestPluginLogs: what a plugin writes on standard error and logs through
// the Host service reaches the kernel's log tagged with the plugin's name,
// generation and pid; `ctl log-level` changes the level while the kernel
// runs, for the kernel's own records and for those plugins send.
func TestPluginLogs(t *testing.T) {
	tk := startKernel(t, logConfig, map[string]string{"probe": probeBin(t, "v1")})
	c := &http.Client{Timeout: 30 * time.Second}
	web := tk.url("web")
	pid := tk.plugin("probe").PID
	tags := []string{"plugin=probe", "generation=1", fmt.Sprintf("pid=%d", pid)}

	mustGet(t, c, web+"/log?msg=tagged")
	forms := map[string]string{
		"stderr line":     "stream=stderr",
		"Host.Log record": fmt.Sprintf(`probe="probe v1 pid %d"`, pid),
		// go-plugin's own hclog records about the process's stdio.
		"hclog record": "logger=stdio",
	}
	for name, form := range forms {
		testutil.WaitFor(t, 10*time.Second, "the "+name+" in the kernel's log", func() bool {
			if form == "logger=stdio" {
				return len(tk.logLines("", append(tags, form)...)) > 0
			}
			return len(tk.logLines("tagged", append(tags, form)...)) == 1
		})
	}

	setLevel := func(level string) {
		t.Helper()
		r := tk.ctl("log-level " + level)
		var got map[string]string
		if !r.OK || json.Unmarshal(r.Data, &got) != nil || got["log_level"] != level {
			t.Fatalf("log-level %s: %+v", level, r)
		}
		var st StatusInfo
		if r := tk.ctl("status"); !r.OK || json.Unmarshal(r.Data, &st) != nil || st.LogLevel != level {
			t.Fatalf("status log_level %q after log-level %s", st.LogLevel, level)
		}
	}
	reloads := func() int { return len(tk.logLines("\"executable read\"", "plugin=probe")) }
	swapped := func() int { return len(tk.logLines("\"plugin swapped\"", "plugin=probe")) }

	// At info, the kernel's own debug records stop: a swap logs that it
	// swapped, not that it read the executable. Both are logged before
	// ctl reload answers.
	setLevel("info")
	readsBefore, swapsBefore := reloads(), swapped()
	if r := tk.ctl("reload probe"); !r.OK {
		t.Fatal(r.Error)
	}
	if reloads() != readsBefore || swapped() != swapsBefore+1 {
		t.Errorf("at info: %d debug records of the swap (want none), %d info records (want 1)", reloads()-readsBefore, swapped()-swapsBefore)
	}
	pid = tk.plugin("probe").PID

	// At warn, a plugin's info record is dropped: the Host service logs it
	// before the request is answered, so it is gone for good by then.
	setLevel("warn")
	mustGet(t, c, web+"/log?msg=quiet")
	setLevel("info")
	mustGet(t, c, web+"/log?msg=loud")
	hostForm := fmt.Sprintf(`probe="probe v1 pid %d"`, pid)
	testutil.WaitFor(t, 10*time.Second, "the record logged at info", func() bool {
		return len(tk.logLines("loud", "plugin=probe", "generation=2", hostForm)) == 1
	})
	if ls := tk.logLines("quiet", hostForm); len(ls) != 0 {
		t.Errorf("a plugin's info record logged at level warn: %q", ls)
	}

	// Back at debug, the swap's debug records return.
	setLevel("debug")
	readsBefore = reloads()
	if r := tk.ctl("reload probe"); !r.OK {
		t.Fatal(r.Error)
	}
	if reloads() != readsBefore+1 {
		t.Errorf("at debug: %d debug records of the swap, want 1", reloads()-readsBefore)
	}
	if r := tk.ctl("log-level loud"); r.OK {
		t.Error("log-level loud was accepted")
	}
}
