package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

func TestHello(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	tests := []struct {
		name, method, path string
		code               int
		body               string
	}{
		{"root", "GET", "/", http.StatusOK, fmt.Sprintf("hello from v1 (pid %d)\n", os.Getpid())},
		{"head", "HEAD", "/", http.StatusOK, ""},
		{"not found", "GET", "/nope", http.StatusNotFound, "404 page not found\n"},
		{"post", "POST", "/", http.StatusMethodNotAllowed, "method not allowed\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://hello.test"+tt.path, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.code {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.code)
			}
			if tt.method == "HEAD" {
				// As net/http answers HEAD: the GET's length, no body.
				get := fmt.Sprintf("hello from v1 (pid %d)\n", os.Getpid())
				if len(b) != 0 || res.ContentLength != int64(len(get)) {
					t.Errorf("HEAD: body %q, Content-Length %d, want none and %d", b, res.ContentLength, len(get))
				}
				return
			}
			if string(b) != tt.body {
				t.Errorf("body = %q, want %q", b, tt.body)
			}
		})
	}
}

func TestHelloGreeting(t *testing.T) {
	p := sdktest.New(t, newPlugin("v2"), map[string]any{"greeting": "bonjour"})
	code, body := p.Get("/")
	if code != http.StatusOK || !strings.HasPrefix(body, "bonjour from v2 (pid ") {
		t.Fatalf("GET / = %d %q", code, body)
	}
}

func TestHelloBadSettings(t *testing.T) {
	for name, settings := range map[string]any{
		"unknown key":    map[string]any{"greting": "x"},
		"empty greeting": map[string]any{"greeting": ""},
		"wrong type":     map[string]any{"greeting": 3},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := sdktest.Start(t, newPlugin("v1"), settings, sdktest.Options{}); err == nil {
				t.Fatal("Configure accepted bad settings")
			}
		})
	}
}
