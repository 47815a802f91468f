package main

import (
	"encoding/json"
	"fmt"
	"net/smtp"
	"slices"
	"strings"
	"testing"
	"time"
)

const smtpOnly = `
[plugins.smtp]
path = "bin/plugins/smtp"

[[listeners]]
name = "mail"
protocol = "line"
address = "127.0.0.1:0"
plugin = "smtp"
`

// bound returns the address listener name is bound to.
func (k *kproc) bound(name string) string {
	k.t.Helper()
	return strings.TrimPrefix(k.url(name), "http://")
}

// TestSMTPDurableAfterKill: a message the smtp plugin acknowledged with 250
// survives a SIGKILL of the kernel the moment the reply arrives, and is in
// the store when a new kernel starts on the same state directory. Three
// rounds, each killing the kernel after one more message.
func TestSMTPDurableAfterKill(t *testing.T) {
	dir := layout(t)
	var ids []string
	for round := range 3 {
		k := startServe(t, dir, smtpOnly)
		k.ready()
		for _, id := range ids {
			k.checkMessage(id)
		}
		c, err := smtp.Dial(k.bound("mail"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("durable@example.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("kept@example.test"); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: round %d\r\n\r\nacknowledged, then the kernel is killed\r\n", round)
		// Close returns once the 250 has arrived; net/smtp does not give
		// the reply's text, so the id is found in the store.
		if err := w.Close(); err != nil {
			t.Fatalf("DATA: %v", err)
		}
		if err := k.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		k.wait(10 * time.Second)
		c.Close()

		k2 := startServe(t, dir, smtpOnly)
		k2.ready()
		var found string
		for _, e := range k2.list("smtp/messages/") {
			id := strings.TrimPrefix(e, "smtp/messages/")
			if !slices.Contains(ids, id) {
				found = id
			}
		}
		if found == "" {
			t.Fatalf("round %d: the acknowledged message is not in the store after SIGKILL", round)
		}
		ids = append(ids, found)
		body := k2.checkMessage(found)
		if !strings.Contains(body, fmt.Sprintf("Subject: round %d", round)) {
			t.Fatalf("round %d: stored message %q", round, body)
		}
		k2.ctl("shutdown")
		k2.wait(10 * time.Second)
	}
}

// list returns the keys of `ctl state list PREFIX`.
func (k *kproc) list(prefix string) []string {
	k.t.Helper()
	out, errOut, code := k.ctl("-json", "state", "list", prefix)
	var r struct {
		Data []struct{ Key string } `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		k.t.Fatalf("ctl state list: %d %q %q", code, out, errOut)
	}
	keys := make([]string, len(r.Data))
	for i, e := range r.Data {
		keys[i] = e.Key
	}
	return keys
}

// checkMessage reads smtp/messages/ID with `ctl state get` and returns it.
func (k *kproc) checkMessage(id string) string {
	k.t.Helper()
	out, errOut, code := k.ctl("-json", "state", "get", "smtp/messages/"+id)
	var r struct {
		Data struct{ Value string } `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Data.Value == "" {
		k.t.Fatalf("message %s: %d %q %q", id, code, out, errOut)
	}
	return r.Data.Value
}
