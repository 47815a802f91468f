package kernel

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/state"
)

// TestAdminReferenceFields: the section of docs/admin.md for each command
// names, in backquotes, every field of the data the kernel answers it with.
// (kernel/admin's TestReferenceCommands checks that every command has a
// section.)
func TestAdminReferenceFields(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "admin.md"))
	if err != nil {
		t.Fatalf("the admin reference: %v", err)
	}
	// The words inside backquotes of each "## `USAGE`" section, by command
	// name (the usage without its arguments in capitals).
	words := map[string]map[string]bool{}
	var cur map[string]bool
	code := regexp.MustCompile("`[^`]*`")
	word := regexp.MustCompile(`[a-z_0-9]+`)
	for _, line := range strings.Split(string(data), "\n") {
		if usage, ok := strings.CutPrefix(line, "## `"); ok {
			name := strings.TrimSpace(regexp.MustCompile(`[A-Z\[\]`+"`"+`]+`).ReplaceAllString(usage, ""))
			name = strings.Join(strings.Fields(name), " ")
			cur = map[string]bool{}
			words[name] = cur
			continue
		}
		if strings.HasPrefix(line, "## ") {
			cur = nil
		}
		if cur == nil {
			continue
		}
		for _, span := range code.FindAllString(line, -1) {
			for _, w := range word.FindAllString(span, -1) {
				cur[w] = true
			}
		}
	}
	status := reflect.TypeFor[StatusInfo]()
	plugin, _ := status.FieldByName("Plugins")
	draining, _ := plugin.Type.Elem().FieldByName("Draining")
	answers := map[string][]reflect.Type{
		"status":        {status},
		"plugins":       {plugin.Type.Elem(), draining.Type.Elem()},
		"listeners":     {reflect.TypeFor[ListenerInfo]()},
		"conns":         {reflect.TypeFor[ConnInfo]()},
		"timers":        {reflect.TypeFor[TimerInfo]()},
		"reload":        {reflect.TypeFor[ReloadResult]()},
		"reload-config": {reflect.TypeFor[ReloadSummary]()},
		"upgrade":       {reflect.TypeFor[UpgradeResult]()},
		"state get":     {reflect.TypeFor[StateValue]()},
		"state put":     {reflect.TypeFor[state.Entry]()},
		"state list":    {reflect.TypeFor[state.Entry]()},
	}
	for cmd, types := range answers {
		section, ok := words[cmd]
		if !ok {
			t.Errorf("docs/admin.md has no section for %s", cmd)
			continue
		}
		for _, typ := range types {
			for i := range typ.NumField() {
				tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
				if tag != "" && tag != "-" && !section[tag] {
					t.Errorf("docs/admin.md, %s: the answer's field %q (%s.%s) is not named", cmd, tag, typ.Name(), typ.Field(i).Name)
				}
			}
		}
	}
}
