package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

// settings are hello's [plugins.NAME.settings].
type settings struct {
	// Greeting replaces "hello" in the answer.
	Greeting string `json:"greeting"`
}

// hello answers GET / and HEAD / with its greeting, version and pid.
type hello struct {
	version  string
	greeting atomic.Value // string
}

func newPlugin(version string) sdk.Plugin {
	h := &hello{version: version}
	h.greeting.Store("hello")
	return sdk.Plugin{
		Name:      "hello",
		Version:   version,
		HTTP:      h,
		Configure: h.configure,
	}
}

func (h *hello) configure(_ context.Context, c sdk.Config) error {
	s := settings{Greeting: "hello"}
	if err := c.Decode(&s); err != nil {
		return err
	}
	if s.Greeting == "" {
		return fmt.Errorf("settings: greeting is empty")
	}
	h.greeting.Store(s.Greeting)
	return nil
}

func (h *hello) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s from %s (pid %d)\n", h.greeting.Load(), h.version, os.Getpid())
}
